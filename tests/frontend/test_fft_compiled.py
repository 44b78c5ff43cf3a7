"""``kiln.fft`` inside ``kiln.compile``: the transforms are ``fft.*`` ops in the compiled graph (O(n log n), no DFT
matmuls), with torch 2.13's values and gradients (float64, a symbolic batch dim, every norm); float32 to float32
rounding. Eager values and gradients of every transform: ``test_fft.py``; the ops themselves: ``tests/ops3/test_fft_ops.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

RNG = np.random.default_rng(5)
SIGNAL = RNG.standard_normal((4, 3, 10))


def _mixing_loss(lib, x, norm):
    """FNet's mixing and an FNO-style round trip: fft over two dims, rfft, a crop, irfft to a padded length."""
    mixed = lib.fft.fft(lib.fft.fft(x, dim=-1, norm=norm), dim=-2, norm=norm).real
    spectrum = lib.fft.rfft(x * 2.0, n=12, norm=norm)[..., :5]
    back = lib.fft.irfft(spectrum, n=14, norm=norm)
    weights = lib.tensor(np.random.default_rng(1).standard_normal(14))
    return (mixed ** 2).sum(-1).sum(-1) + (back * weights).sum(-1).sum(-1)


def _train_step(lib, norm, compiled):
    """One SGD step on a per-frequency scale ``w`` (``x * w`` fed to the loss): the loss and ``w``'s gradient."""
    scale = lib.nn.Parameter(lib.tensor(np.linspace(0.5, 1.5, 10)))
    optimizer = lib.optim.SGD([scale], lr=0.1)

    def step(x):
        optimizer.zero_grad()
        loss = _mixing_loss(lib, x * scale, norm).sum()
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    results = []
    for batch in (4, 2):  # a second batch size: the symbolic batch dim's variant serves it
        loss = run(lib.tensor(SIGNAL[:batch]))
        results += [loss.detach().numpy(), scale.grad.detach().numpy(), scale.detach().numpy()]
    return results, run


@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
def test_compiled_transforms_are_fft_ops_with_torchs_values_and_gradients(norm):
    torch = require_torch()
    ours, compiled = _train_step(kiln, norm, compiled=True)
    theirs, _ = _train_step(torch, norm, compiled=False)
    for got, expected in zip(ours, theirs):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    names = [op.name for op in compiled.graph.ops]
    assert names.count("fft.c2c") == 4 and names.count("fft.r2c") == 2 and names.count("fft.c2r") == 2  # forward, backward
    assert "tensor.matmul" not in names


def test_float32_compiled_matches_torch_to_rounding():
    torch = require_torch()
    x = SIGNAL.astype(np.float32)
    ours = kiln.compile(lambda t: kiln.fft.irfft(kiln.fft.rfft(t) * 0.5, n=10), fullgraph=True)(kiln.tensor(x))
    theirs = torch.fft.irfft(torch.fft.rfft(torch.tensor(x)) * 0.5, n=10)
    assert ours.dtype is kiln.float32
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-5, atol=1e-6)
