"""Integer index arrays among slices, ints, None and ... (``v[:, [-1]]``, ``x[:, idx, 1:3]``), read as PyTorch reads
them (frontend/advanced_indexing.py): shapes, values and gradients against torch, eager and compiled."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from oracles import require_torch

X = np.arange(3 * 4 * 5 * 6, dtype=np.float64).reshape(3, 4, 5, 6) / 7.0
ALL = slice(None)
INDICES = [
    (ALL, [-1]), (0, ALL, [1, 2]), (ALL, [0, 2], [1, 3]), ([0, 1], ALL, [1, 2]), (ALL, [[0], [1]], slice(1, 3)),
    (None, ALL, [1]), (Ellipsis, [0, -1]), (ALL, None, [1, 2], None), ([0, 1], 0, ALL, [1, 2]), (ALL, [0, 1], 0, [1, 2]),
    (ALL, [0, 1], None, [1, 2]), (0, [0, 1], ALL, [1, 2]), (ALL, ALL, [1], slice(1, None)), (slice(1, 3), np.array([[1, 0], [2, 3]])),
    (ALL, ALL, ALL, [5, 0, 5]), (ALL, [3, -4, 0], slice(None, None, 2), [[1], [-1]]),
]


def _torch_index(torch, index):
    return tuple(torch.tensor(item) if isinstance(item, np.ndarray) else item for item in index)


@pytest.mark.parametrize("index", INDICES, ids=repr)
def test_values_and_gradients_match_torch(index):
    torch = require_torch()
    expected = torch.tensor(X, requires_grad=True)
    weights = np.random.default_rng(0).standard_normal(tuple(expected[_torch_index(torch, index)].shape))
    (expected[_torch_index(torch, index)] * torch.tensor(weights)).sum().backward()
    x = kiln.tensor(X, requires_grad=True)
    got = x[index]
    (grad,) = kiln.autograd.grad((got * kiln.tensor(weights)).sum(), x)
    np.testing.assert_array_equal(got.numpy(), expected.detach()[_torch_index(torch, index)].numpy())
    np.testing.assert_array_equal(grad.numpy(), expected.grad.numpy())  # repeated picks add up, as torch's


def test_an_eager_index_tensor_and_a_traced_symbolic_batch():
    torch = require_torch()
    picks = kiln.tensor(np.array([2, 0, 2]))

    def pick(v):
        return v[:, picks, 1:] * v[:, [-1], :1]

    compiled = kiln.compile(pick)
    for batch in (3, 5):
        v = np.random.default_rng(batch).standard_normal((batch, 4, 6))
        expected = torch.tensor(v)[:, torch.tensor([2, 0, 2]), 1:] * torch.tensor(v)[:, [-1], :1]
        np.testing.assert_allclose(compiled(v), expected.numpy(), rtol=1e-15)
        np.testing.assert_allclose(pick(kiln.tensor(v)).numpy(), expected.numpy(), rtol=1e-15)
    graph = kiln.trace(pick, kiln.TensorSpec(("N", 4, 6), "float64"))
    assert graph.outputs[0].type.shape == ("N", 3, 5)


def test_top_k_sampling_threshold_as_nanogpt_writes_it():
    torch = require_torch()
    logits = np.random.default_rng(1).standard_normal((2, 11)).astype(np.float32)

    def threshold(lib, logits):
        v, _ = lib.topk(logits, 3)
        return logits.masked_fill(logits < v[:, [-1]], -float("inf"))

    ours = F.softmax(threshold(kiln, kiln.tensor(logits)), dim=-1).numpy()
    theirs = torch.softmax(threshold(torch, torch.tensor(logits)), dim=-1).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert ((ours > 0).sum(axis=1) == 3).all()


def test_bad_indices_say_what():
    torchs_words = r"index 4 is out of bounds for dimension 1 with size 4"
    with pytest.raises(kiln.TraceError, match=r"test_mixed_advanced_indexing_vs_torch.py:\d+(?s:.*)" + torchs_words):
        kiln.tensor(X)[:, [0, 4]]
    with pytest.raises(kiln.TraceError, match=r"symbolic dim N must hold known non-negative"):
        kiln.trace(lambda v: v[[-1], :, None], kiln.TensorSpec(("N", 4), "float64"))


WRITES = [((ALL, [1, 2]), 5.0), (([0, 2], slice(1, 3)), "row"), ((Ellipsis, [0, -1]), "column"), ((1, ALL, [4, 0]), -1.0),
          ((ALL, [[0], [3]], 2, [1, 5]), "cell")]


def _write_value(lib, kind, shape):
    if not isinstance(kind, str):
        return kind
    rng = np.random.default_rng(len(kind))
    return lib.tensor(rng.standard_normal(shape), requires_grad=True)


@pytest.mark.parametrize(("index", "kind"), WRITES, ids=repr)
def test_writes_match_torch_with_gradients_to_the_tensor_and_the_value(index, kind):
    torch = require_torch()
    shape = tuple(torch.zeros(X.shape)[_torch_index(torch, index)].shape)
    results = []
    for lib in (kiln, torch):
        base = lib.tensor(X, requires_grad=True)
        value = _write_value(lib, kind, shape[-1:] if kind == "row" else shape)
        x = base * 1.0
        x[_torch_index(torch, index) if lib is torch else index] = value
        x[_torch_index(torch, index) if lib is torch else index] += 1  # a read-modify-write of the same places
        loss = (x * lib.tensor(np.cos(X))).sum()
        grads = (lib.autograd.grad(loss, [base, value]) if isinstance(kind, str) else lib.autograd.grad(loss, [base]))
        results.append([np.asarray(x.detach().numpy())] + [np.asarray(g.numpy()) for g in grads])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=1e-14)


def test_a_compiled_write_and_a_symbolic_shape_refused():
    torch = require_torch()

    def write(x):
        x = x * 2.0
        x[:, [0, 2]] = 0.0
        return x

    v = np.random.default_rng(3).standard_normal((4, 5))
    np.testing.assert_array_equal(kiln.compile(write, batch_dim=None)(v), write(torch.tensor(v)).numpy())
    with pytest.raises(kiln.TraceError, match="needs a static shape"):
        kiln.trace(write, kiln.TensorSpec(("N", 5), "float64"))
