"""``kiln.sparse_coo_tensor``, ``to_sparse``, ``to_dense`` and ``is_sparse``, as gcn's ``load_cora`` builds its
adjacency (``sparse_coo_tensor(edges.T, ones(E), (V, V), dtype=int64)``, ``diag(d).to_sparse() @ x``): kiln has one
layout and builds them dense. Values against torch's ``to_dense()`` (repeated indices summed, dtypes, inferred sizes);
gradients through a "sparse" product against torch's sparse ones in float64; the errors for bad indices and a trace."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

EDGES = np.array([[0, 1], [1, 2], [0, 1], [3, 0]], dtype=np.int32)  # (0, 1) twice: summed


@pytest.mark.parametrize("size, dtype", [((4, 4), "int64"), ((5, 4), None), (None, None), (None, "float64")])
def test_values_dtype_and_size_match_torchs_dense_form(size, dtype):
    torch = require_torch()
    sized = () if size is None else (size,)  # torch's size is a separate overload, not None
    ours = kiln.sparse_coo_tensor(EDGES.T, kiln.ones(len(EDGES)), *sized, dtype=dtype and getattr(kiln, dtype))
    theirs = torch.sparse_coo_tensor(EDGES.T, torch.ones(len(EDGES)), *sized, dtype=dtype and getattr(torch, dtype),
                                     check_invariants=False).to_dense()
    assert tuple(ours.shape) == tuple(theirs.shape) and np.asarray(ours).dtype == theirs.numpy().dtype
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def test_values_with_dense_dims_and_a_python_list_match_torchs():
    torch = require_torch()
    values = [[1.5, 2.0], [0.25, -1.0], [3.0, 4.0], [1.0, 1.0]]
    ours = kiln.sparse_coo_tensor(EDGES.T, values, (4, 4, 2))
    theirs = torch.sparse_coo_tensor(EDGES.T, values, (4, 4, 2), check_invariants=False).to_dense()
    assert np.asarray(ours).dtype == theirs.numpy().dtype
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def test_load_coras_renormalisation_and_its_gradient_match_torchs_sparse_path():
    torch = require_torch()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))

    def propagate(lib, features):
        adj = lib.eye(4, dtype=lib.float64) + lib.sparse_coo_tensor(EDGES.T, lib.ones(len(EDGES)), (4, 4), dtype=lib.int64)
        degree = lib.diag(lib.sqrt(1 / lib.sum(adj, dim=1))).to_sparse()
        normalised = (degree @ adj @ degree).to_sparse()
        return (lib.spmm(normalised, features).tanh() * lib.arange(3.0, dtype=lib.float64)).sum()

    theirs = torch.tensor(x, requires_grad=True)
    expected = propagate(torch, theirs)
    expected.backward()
    ours = kiln.tensor(x, requires_grad=True)
    got = propagate(kiln, ours)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-13)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_to_sparse_copies_as_torchs_and_passes_gradients_to_dense_keeps_a_dense_tensor():
    torch = require_torch()
    values = np.arange(6.0).reshape(2, 3)
    ours, theirs = kiln.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    sparse, torch_sparse = ours.to_sparse(), theirs.to_sparse()
    assert sparse is not ours and sparse.is_sparse and torch_sparse.is_sparse
    assert str(sparse.layout).split(".")[-1] == str(torch_sparse.layout).split(".")[-1] == "sparse_coo"
    assert not sparse.to_dense().is_sparse and not torch_sparse.to_dense().is_sparse
    assert ours.to_dense() is ours and theirs.to_dense() is theirs
    (sparse.to_dense() * kiln.tensor(values)).sum().backward()
    (torch_sparse.to_dense() * torch.tensor(values)).sum().backward()
    np.testing.assert_array_equal(ours.grad.numpy(), theirs.grad.numpy())
    np.testing.assert_array_equal(np.asarray(sparse), values)


@pytest.mark.parametrize("indices, match", [
    (np.array([[0, 4], [1, 1]]), r"index is outside the size \(4, 4\)"),
    (np.array([[0, -1], [1, 1]]), r"index is outside the size"),
    (np.array([0, 1]), r"indices must be integers of shape \(sparse dims, nnz\)"),
    (np.array([[0.0, 1.0], [1.0, 1.0]]), r"indices must be integers"),
])
def test_bad_indices_are_refused_saying_what_they_must_be(indices, match):
    with pytest.raises(TraceError, match=match):
        kiln.sparse_coo_tensor(indices, kiln.ones(2), (4, 4))


def test_inside_a_trace_it_is_built_in_the_graph_as_torch():
    """Traced (torch.compile traces it too): the dense values in the graph, repeated indices summed."""
    torch = require_torch()

    def f(lib, x):
        return (x * (x + lib.sparse_coo_tensor(EDGES.T, lib.ones(len(EDGES)), (4, 4)))).sum()

    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    theirs = torch.tensor(x, requires_grad=True)
    f(torch, theirs).backward()
    np.testing.assert_allclose(kiln.grad(lambda t: f(kiln, t))(x), theirs.grad.numpy(), rtol=1e-6)
