"""A tensor a module caches during a traced ``forward`` (word_language_model's ``self.src_mask``, built once by
``triu``/``masked_fill`` and reused while the length stays the same) keeps working outside the trace when it is
computed from constants alone: after ``kiln.compile`` or ``kiln.compile_train_step`` traced the model, eager calls
(evaluation under ``no_grad``, ``backward()``) reuse it with PyTorch's values and gradients."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _masked_attention(lib, nn, library_mask=False):
    class MaskedMixer(nn.Module):
        """Causal mixing of a sequence-first ``(L, N, D)`` input, its mask cached as the program caches it (built by
        hand, or by ``nn.Transformer.generate_square_subsequent_mask``)."""

        def __init__(self, width=3):
            super().__init__()
            self.proj = nn.Linear(width, width)
            self.src_mask = None

        def _generate_square_subsequent_mask(self, sz):
            if library_mask:
                return nn.Transformer.generate_square_subsequent_mask(sz)
            mask = (lib.triu(lib.ones(sz, sz)) == 1).transpose(0, 1)
            return mask.float().masked_fill(mask == 0, float("-inf")).masked_fill(mask == 1, float(0.0))

        def forward(self, src):
            if self.src_mask is None or self.src_mask.size(0) != len(src):
                self.src_mask = self._generate_square_subsequent_mask(len(src)).to(src.device)
            scores = lib.einsum("lnd,mnd->nlm", src, src) + self.src_mask.to(src.dtype)
            return self.proj(lib.einsum("nlm,mnd->lnd", scores.softmax(-1), src))

    return MaskedMixer()


def _twins(torch, library_mask=False):
    ours = _masked_attention(kiln, kiln.nn, library_mask).double()
    theirs = _masked_attention(torch, torch.nn, library_mask).double()
    theirs.load_state_dict({k: torch.tensor(np.array(v)) for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("library_mask", [False, True], ids=["triu-masked_fill", "nn.Transformer.generate_square_subsequent_mask"])
def test_a_mask_cached_while_compiling_serves_eager_calls_with_torchs_values_and_gradients(library_mask):
    torch = require_torch()
    kiln.manual_seed(0)
    ours, theirs = _twins(torch, library_mask)
    x = np.random.default_rng(0).normal(size=(4, 2, 3))
    compiled = kiln.compile(ours, batch_dim=None)(x)
    assert isinstance(ours.src_mask, kiln.Tensor)
    np.testing.assert_array_equal(ours.src_mask.numpy(), np.triu(np.full((4, 4), -np.inf), 1))
    eager = ours(kiln.tensor(x))  # reuses the cached mask
    expected = theirs(torch.tensor(x))
    np.testing.assert_allclose(eager.numpy(), expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(compiled, expected.detach().numpy(), rtol=1e-12)
    (eager ** 2).sum().backward()
    (expected ** 2).sum().backward()
    np.testing.assert_allclose(ours.proj.weight.grad, theirs.proj.weight.grad.numpy(), rtol=1e-10)


def test_a_training_step_then_eager_evaluation_under_no_grad():
    torch = require_torch()
    kiln.manual_seed(1)
    ours, theirs = _twins(torch)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 2, 3)), rng.normal(size=(4, 2, 3))
    step = kiln.compile_train_step(ours, lambda out, target: ((out - target) ** 2).mean(), kiln.optim.SGD(ours.parameters(), lr=0.1),
                                   batch_dim=None)
    step(x, y)
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1)
    ((theirs(torch.tensor(x)) - torch.tensor(y)) ** 2).mean().backward()
    optimizer.step()
    with kiln.no_grad():
        evaluated = ours(kiln.tensor(x)).numpy()
    with torch.no_grad():
        np.testing.assert_allclose(evaluated, theirs(torch.tensor(x)).numpy(), rtol=1e-12)


def test_a_cached_tensor_that_reads_the_input_holds_each_compiled_calls_values():
    """kiln.compile sets it to each call's value, as torch.compile leaves the attribute
    (runtime/attribute_writes.py); it used to stay a traced tensor with no value outside its trace."""
    class KeepsActivation(kiln.nn.Module):
        def forward(self, x):
            self.last = x * 2
            return self.last.sum()

    model = KeepsActivation()
    compiled = kiln.compile(model)
    for scale in (1.0, 3.0):
        compiled(np.full((2, 3), scale, np.float32))
        np.testing.assert_array_equal((model.last + 1).numpy(), np.full((2, 3), 2 * scale + 1, np.float32))
