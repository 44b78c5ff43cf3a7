"""A double backward through a ``kiln.compile``d module whose forward cuts gradients (``no_grad``, ``detach()``) or
writes buffers, against PyTorch 2.13's eager module at 1e-12: the forward the double backward replays
(``runtime/compiled_double_backward.py``) keeps the traced ``stop_gradient``s and starts from the buffers as the call
read them (``runtime/compiled_training.py``). Sliced and denoising score matching of a spectral-normed energy network
(ermongroup/sliced_score_matching) run such a double backward at every step."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _spectral_norm_energy(lib):
    return lib.nn.Sequential(lib.nn.utils.spectral_norm(lib.nn.Linear(2, 3)), lib.nn.Softplus(), lib.nn.Linear(3, 1))


def _detaching(lib):
    class Detaching(lib.nn.Module):
        """A forward scaled by a detached statistic of itself (a normalisation whose scale takes no gradient)."""

        def __init__(self):
            super().__init__()
            self.linear = lib.nn.Linear(2, 3)

        def forward(self, x):
            h = self.linear(x)
            return lib.tanh(h) * h.detach().pow(2).mean()

    return Detaching()


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("make", [_spectral_norm_energy, _detaching], ids=["spectral norm", "detach"])
def test_input_gradient_penalty_through_a_compiled_module_as_torch(make, mode):
    """``g = autograd.grad(f(x).sum(), x, create_graph=True)``, ``(g ** 2).sum().backward()``, twice: the parameters'
    gradients and the buffers after. The replayed forward dropped ``no_grad``'s cuts (the power iteration's gradient
    reached ``weight_orig``) and iterated from the buffers the call had written (a second power iteration)."""
    torch = require_torch()
    kiln.manual_seed(0)
    ours, theirs = make(kiln).double(), make(torch).double()
    theirs.load_state_dict({key: torch.tensor(np.array(value)) for key, value in ours.state_dict().items()})
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((4, 2)) for _ in range(2)]
    records = []
    for lib, module in ((kiln, ours), (torch, theirs)):
        getattr(module, mode)()
        run = kiln.compile(module, fullgraph=True) if lib is kiln else module
        for batch in batches:
            x = lib.tensor(batch).requires_grad_(True)
            (g,) = lib.autograd.grad(run(x).sum(), x, create_graph=True)
            (g ** 2).sum().backward()
        records.append({**{name: np.array(p.grad) for name, p in module.named_parameters() if p.grad is not None},
                        **{name: np.array(b) for name, b in module.named_buffers()}})
    assert set(records[0]) == set(records[1])
    for name in records[1]:
        np.testing.assert_allclose(records[0][name], records[1][name], rtol=1e-12, atol=1e-13, err_msg=name)
