"""kiln.vmap over the linalg dialect (compiler/batching/rules_linalg.py), against torch.vmap in float64."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

RNG = np.random.default_rng(0)
A = RNG.normal(size=(5, 3, 3)) + 3 * np.eye(3)
B = RNG.normal(size=(5, 3, 2))

CASES = {  # name: (function of (linalg, a, b), in_axes)
    "det": (lambda L, a, b: L.det(a), (0, None)),
    "inv": (lambda L, a, b: L.inv(a), (0, None)),
    "slogdet": (lambda L, a, b: L.slogdet(a)[1] * L.slogdet(a)[0], (0, None)),
    "cholesky": (lambda L, a, b: L.cholesky(a @ a.mT), (0, None)),
    "eigvalsh": (lambda L, a, b: L.eigvalsh(a @ a.mT), (0, None)),
    "svdvals": (lambda L, a, b: L.svdvals(a), (0, None)),
    "qr": (lambda L, a, b: L.qr(a).R.abs(), (0, None)),
    "lu_factor": (lambda L, a, b: L.lu_factor(a).LU, (0, None)),
    "matrix_exp": (lambda L, a, b: L.matrix_exp(a * 0.1), (0, None)),
    "solve_both_batched": (lambda L, a, b: L.solve(a, b), (0, 0)),
    "solve_batched_right_hand_side": (lambda L, a, b: L.solve(a, b), (None, 0)),
    "solve_batched_matrix": (lambda L, a, b: L.solve(a, b), (0, None)),
    "solve_triangular": (lambda L, a, b: L.solve_triangular(a.triu(), b, upper=True), (0, 0)),
    "cholesky_ex": (lambda L, a, b: L.cholesky_ex(a @ a.mT).L, (0, None)),
}


def _argument(array, axis):
    return array if axis == 0 else array[0]


@pytest.mark.parametrize("name", CASES)
def test_vmap_of_linalg_matches_torch_vmap(name):
    torch = require_torch()
    fn, in_axes = CASES[name]
    a, b = _argument(A, in_axes[0]), _argument(B, in_axes[1])
    ours = kiln.vmap(lambda x, y: fn(kiln.linalg, x, y), in_axes=in_axes)(a, b)
    theirs = torch.vmap(lambda x, y: fn(torch.linalg, x, y), in_dims=in_axes)(torch.tensor(a), torch.tensor(b))
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-10, atol=1e-12)


def test_per_example_gradients_through_linalg():
    torch = require_torch()
    ours = kiln.vmap(kiln.grad(lambda a: kiln.linalg.slogdet(a)[1] + kiln.linalg.inv(a).sum()))(A)
    theirs = torch.vmap(torch.func.grad(lambda a: torch.linalg.slogdet(a)[1] + torch.linalg.inv(a).sum()))(torch.tensor(A))
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)
