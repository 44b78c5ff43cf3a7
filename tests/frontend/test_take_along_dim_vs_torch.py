"""``Tensor.take_along_dim`` / ``kiln.take_along_dim`` as torch's: ``input`` and ``indices`` broadcast against each
other in every dim but ``dim`` (as ``np.take_along_axis``), so ``x.take_along_dim(idx, -1)`` with ``idx`` of shape
``(1, 1, k)`` reads the same positions of every row (kiln returned only the first row's); with no ``dim``, over the
flattened tensors. Values and gradients eagerly and compiled, and torch's refusals."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.arange(60.0).reshape(3, 4, 5) / 7


@pytest.mark.parametrize("take", [
    lambda lib, x: x.take_along_dim(lib.tensor([[[4, 0]]]), -1),
    lambda lib, x: lib.take_along_dim(x, lib.tensor([[[1]], [[0]], [[3]]]), dim=1),
    lambda lib, x: x[:1].take_along_dim(lib.tensor(np.zeros((3, 4, 2), np.int64)), 2),
    lambda lib, x: lib.take_along_dim(x, x.argsort(-1), -1),
    lambda lib, x: lib.take_along_dim(x, lib.tensor([7, 59, 0])),
], ids=["indices broadcast over rows", "over the other dims", "input broadcast", "same shapes", "flattened"])
def test_take_along_dim_as_torch(take):
    results = []
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        x = lib.tensor(X, requires_grad=True)
        y = take(lib, x)
        (y * lib.arange(y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
        results.append((y.detach().numpy(), x.grad.numpy()))
    (ours, our_grad), (theirs, their_grad) = results
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(our_grad, their_grad)
    compiled = kiln.compile(lambda x: take(kiln, x), fullgraph=True)(kiln.tensor(X))
    np.testing.assert_array_equal(compiled.numpy(), theirs)


@pytest.mark.parametrize("indices, words", [
    (lambda lib: lib.tensor([0, 1]), "should have the same number of dimensions"),
    (lambda lib: lib.tensor([[[0.0]]]), "dtype of indices should be Long but got Float"),
    (lambda lib: lib.zeros(2, 1, 1, dtype=lib.int64), "must match the size of tensor b (2) at non-singleton dimension 0"),
], ids=["rank", "dtype", "shapes that do not broadcast"])
def test_take_along_dim_refuses_as_torch(indices, words):
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        with pytest.raises(RuntimeError, match=None) as raised:
            lib.take_along_dim(lib.tensor(X, dtype=lib.float32), indices(lib), dim=2)
        assert words in str(raised.value), (name, str(raised.value))
