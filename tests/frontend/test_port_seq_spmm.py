"""``kiln.spmm``, as gcn's ``GraphConv`` multiplies the normalised adjacency by the support
(``torch.spmm(adj_mat, support)``): kiln has no sparse layout, so the adjacency is a dense matrix. Values and
gradients against torch in float64, eagerly (``backward``), traced (``kiln.grad``), and the error for a non-matrix."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch


def _operands():
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 5)), rng.normal(size=(5, 3))


def _loss(lib, a, b):
    return (lib.spmm(a, b).tanh() * lib.arange(3.0)).sum()


def test_values_and_gradients_match_torchs_eagerly_and_traced():
    torch = require_torch()
    x, y = _operands()
    a, b = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    expected = _loss(torch, a, b)
    expected.backward()
    ours_a, ours_b = kiln.tensor(x, requires_grad=True), kiln.tensor(y, requires_grad=True)
    got = _loss(kiln, ours_a, ours_b)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-13)
    np.testing.assert_allclose(ours_a.grad.numpy(), a.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours_b.grad.numpy(), b.grad.numpy(), rtol=1e-12, atol=1e-15)
    grads = kiln.grad(lambda p, q: _loss(kiln, p, q), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(grads[0], a.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads[1], b.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_gradient_matches_finite_differences():
    x, y = _operands()
    grad = kiln.grad(lambda q: _loss(kiln, kiln.tensor(x), q))(y)
    h, numeric = 1e-6, np.zeros_like(y)
    for index in np.ndindex(y.shape):
        bump = np.zeros_like(y)
        bump[index] = h
        numeric[index] = (_loss(kiln, kiln.tensor(x), kiln.tensor(y + bump)).item()
                          - _loss(kiln, kiln.tensor(x), kiln.tensor(y - bump)).item()) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-9)


def test_a_vector_operand_is_refused_as_torchs_saying_to_use_matmul():
    x, y = _operands()
    with pytest.raises(TraceError, match=r"spmm needs 2-D operands.*use matmul"):
        kiln.spmm(kiln.tensor(x), kiln.tensor(y[:, 0]))
