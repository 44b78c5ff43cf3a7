"""``linalg.solve_triangular`` (and ``cholesky_solve``, ``cholesky_inverse``, ``triangular_solve`` built on it) is
substitution, as LAPACK's ``trtrs``/``potrs`` behind torch 2.13's (``backends/numpy/triangular_substitution.py``):
on ill-conditioned triangles (cond 1e8, off-diagonal entries beating the diagonal, so an LU solve pivots) kiln agrees
with torch to 1e-13 relative where kiln's former LU solve was ~1e-10 off; a GP's ``cholesky_solve`` with noise 1e-5
likewise (it formed ``L L^T`` and solved that, 1e-9 off). Across the 32-row blocks, batched with broadcasting, both
triangles, left and right, unitriangular, transposed; a zero on the diagonal gives torch's infinities."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
import kiln.linalg
from oracles import require_torch

RNG = np.random.default_rng(7)
SIZES = [5, 31, 32, 33, 70]


def _ill_conditioned_lower(n, unit=False, cond=1e8):
    """A lower triangle of condition number ``cond``: an O(1) diagonal (ones if ``unit``), the strictly lower part
    scaled (by bisection) until the inverse grows that much; its entries then beat the diagonal, so LU pivots."""
    diagonal = np.ones(n) if unit else RNG.uniform(0.5, 1.0, n) * RNG.choice([-1.0, 1.0], n)
    strict = np.tril(RNG.uniform(-1.0, 1.0, (n, n)), -1)
    low, high = 0.0, 50.0
    for _ in range(60):
        scale = (low + high) / 2
        low, high = (scale, high) if np.linalg.cond(np.diag(diagonal) + scale * strict) < cond else (low, scale)
    return np.diag(diagonal) + scale * strict


def _relative(ours, theirs):
    return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


def _lu_solve(triangle, b):
    """kiln's former kernel: NumPy's LU solve of the triangle, to show where it would differ."""
    return np.linalg.solve(triangle, b)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("unit", [False, True])
def test_ill_conditioned_lower_triangles_match_torch_to_1e13(n, unit):
    torch = require_torch()
    lower = np.stack([_ill_conditioned_lower(n, unit) for _ in range(2)])
    read = lower + np.triu(RNG.standard_normal((n, n)), 0 if unit else 1)  # the triangle alone is read
    b = RNG.standard_normal((2, n, 3))
    theirs = torch.linalg.solve_triangular(torch.tensor(read), torch.tensor(b), upper=False, unitriangular=unit).numpy()
    ours = kiln.linalg.solve_triangular(kiln.tensor(read), kiln.tensor(b), upper=False, unitriangular=unit)
    assert _relative(ours, theirs) < 1e-13
    if n > 5:
        assert _relative(_lu_solve(lower, b), theirs) > 1e-12  # an LU solve differs here: the test can tell


@pytest.mark.parametrize("n", SIZES)
def test_upper_right_and_transposed_solves_match_torch_to_1e13(n):
    torch = require_torch()
    upper = np.stack([_ill_conditioned_lower(n).T for _ in range(3)])[:, None]  # (3, 1, n, n) against (2, k, n)
    b = RNG.standard_normal((2, 4, n))
    t_upper, t_b = torch.tensor(upper), torch.tensor(b)
    k_upper, k_b = kiln.tensor(upper), kiln.tensor(b)
    right = torch.linalg.solve_triangular(t_upper, t_b, upper=True, left=False).numpy()  # X U = B: U^T is lower
    assert _relative(kiln.linalg.solve_triangular(k_upper, k_b, upper=True, left=False), right) < 1e-13
    lu_right = np.swapaxes(_lu_solve(np.swapaxes(upper, -1, -2), np.swapaxes(b, -1, -2)), -1, -2)
    if n > 5:  # as in the lower test: a 5x5 LU pivots little, its gap to torch is luck (7e-16 to 6e-12 over seeds 0-5)
        assert _relative(lu_right, right) > 1e-12
    left = torch.linalg.solve_triangular(t_upper, t_b.mT, upper=True).numpy()
    assert _relative(kiln.linalg.solve_triangular(k_upper, k_b.mT, upper=True), left) < 1e-13
    with warnings.catch_warnings():  # both warn triangular_solve's deprecation once per process
        warnings.simplefilter("ignore")
        transposed = torch.triangular_solve(t_b.mT, t_upper, upper=True, transpose=True).solution.numpy()
        ours = kiln.triangular_solve(k_b.mT, k_upper, upper=True, transpose=True).solution
    assert _relative(ours, transposed) < 1e-13


def _gp_factor(n, noise=1e-5):
    points = RNG.uniform(-2.0, 2.0, (n, 2))
    kernel = np.exp(-0.5 * ((points[:, None] - points[None]) ** 2).sum(-1)) + noise * np.eye(n)
    return np.linalg.cholesky(kernel)


@pytest.mark.parametrize("upper", [False, True])
def test_gp_cholesky_solve_and_inverse_match_torch_to_1e13(upper):
    torch = require_torch()
    lower = _gp_factor(40)
    factor = lower.T if upper else lower
    b = RNG.standard_normal((40, 2))
    theirs = torch.cholesky_solve(torch.tensor(b), torch.tensor(factor), upper=upper).numpy()
    assert _relative(kiln.cholesky_solve(kiln.tensor(b), kiln.tensor(factor), upper=upper), theirs) < 1e-13
    assert _relative(np.linalg.solve(lower @ lower.T, b), theirs) > 1e-12  # kiln's former L L^T solve
    inverse = torch.cholesky_inverse(torch.tensor(factor), upper=upper).numpy()
    assert _relative(kiln.cholesky_inverse(kiln.tensor(factor), upper=upper), inverse) < 1e-13


@pytest.mark.parametrize("upper", [False, True])
def test_cholesky_solve_gradients_match_torch(upper):
    torch = require_torch()
    lower = _gp_factor(12, noise=1e-2)
    factor = lower.T if upper else lower
    b = RNG.standard_normal((12, 2))
    weights = RNG.standard_normal((12, 2))
    grads = []
    for lib in (kiln, torch):
        f, rhs = lib.tensor(factor, requires_grad=True), lib.tensor(b, requires_grad=True)
        (lib.cholesky_solve(rhs, f, upper=upper) * lib.tensor(weights)).sum().backward()
        grads.append([np.asarray(t.grad.detach().numpy() if lib is torch else t.grad) for t in (f, rhs)])
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10 * np.abs(theirs).max())


def test_a_zero_on_the_diagonal_gives_torchs_infinities():
    torch = require_torch()
    a = np.array([[0.0, 0.0], [1.0, 1.0]])
    b = np.ones((2, 1))
    theirs = torch.linalg.solve_triangular(torch.tensor(a), torch.tensor(b), upper=False).numpy()
    ours = np.asarray(kiln.linalg.solve_triangular(kiln.tensor(a), kiln.tensor(b), upper=False))
    np.testing.assert_array_equal(ours, theirs)
    assert np.isinf(theirs).all()
