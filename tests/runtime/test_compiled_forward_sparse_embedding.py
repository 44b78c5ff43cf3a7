"""A ``kiln.compile``d model whose forward looks a trained weight up with ``sparse=True`` runs that call eagerly, so
the weight's ``.grad`` is sparse as PyTorch's: SparseAdam trains it as torch's, Adam refuses it with torch's words
(a compiled forward used to give a dense gradient, on which Adam silently ran a dense update)."""

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _train(lib, optimizer, compiled):
    embedding = lib.nn.Embedding(10, 3, sparse=True).double()
    with lib.no_grad():
        embedding.weight.copy_(lib.arange(30.0, dtype=lib.float64).reshape(10, 3) / 30)
    step = getattr(lib.optim, optimizer)(embedding.parameters(), lr=0.1)
    forward = kiln.compile(embedding) if compiled else embedding
    for rows in ([[1, 2, 2], [5, 1, 0]], [[3, 3, 9], [1, 0, 0]]):
        step.zero_grad()
        (forward(lib.tensor(rows)) ** 2).sum().backward()
        assert embedding.weight.grad.is_sparse
        step.step()
    return embedding.weight.detach().numpy()


def test_compiled_forward_with_a_sparse_lookup_trains_as_torch():
    torch = require_torch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = _train(kiln, "SparseAdam", compiled=True)
    assert any("embedding(sparse=True)" in str(w.message) and "runs eagerly" in str(w.message) for w in caught)
    np.testing.assert_allclose(ours, _train(torch, "SparseAdam", compiled=False), rtol=1e-13, atol=1e-15)


def test_adam_refuses_the_sparse_gradient_of_a_compiled_forward_as_torch():
    torch = require_torch()
    with pytest.raises(RuntimeError, match="Adam does not support sparse gradients"):
        _train(torch, "Adam", compiled=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="Adam does not support sparse gradients"):
            _train(kiln, "Adam", compiled=True)
