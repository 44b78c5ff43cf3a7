"""``kiln.linalg.cholesky_ex`` on matrices without a Cholesky factor: ``info`` is PyTorch's exactly and ``L`` is the
partial factor LAPACK stopped at, as PyTorch returns it (not NaN), for the triangle PyTorch reads (lower, or upper
with ``upper=True``), batched, with NaN, eagerly and compiled; gradients of the factored matrices stay PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.linalg
from oracles import require


def _matrices(seed: int, n: int, symmetric: bool = True, nan: bool = False) -> np.ndarray:
    """A batch of 4: positive definite ones shifted down so that some fail at a random leading minor."""
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((4, n, n))
    A = B @ B.transpose(0, 2, 1) + 0.1 * np.eye(n) - np.array([0.0, 1.0, 4.0, 20.0])[:, None, None] * rng.random() * np.eye(n)
    if not symmetric:
        A = A + np.triu(rng.standard_normal((4, n, n)), 1)  # the triangle torch does not read
    if nan:
        A[rng.random(A.shape) < 0.06] = np.nan
    return A


_CASES = [(seed, n, symmetric, nan, upper) for seed, n in enumerate([1, 2, 3, 5, 8, 13, 40])
          for symmetric in (True, False) for nan in (False, True) for upper in (False, True)]


@pytest.mark.parametrize(("seed", "n", "symmetric", "nan", "upper"), _CASES)
def test_info_and_the_partial_factor_match_torch(seed, n, symmetric, nan, upper):
    torch = require("torch")
    A = _matrices(seed, n, symmetric, nan)
    A = A.transpose(0, 2, 1) if upper else A  # the read triangle holds the values
    expected = torch.linalg.cholesky_ex(torch.tensor(A), upper=upper)
    got = kiln.linalg.cholesky_ex(kiln.tensor(A), upper=upper)
    np.testing.assert_array_equal(got.info.numpy(), expected.info.numpy())
    np.testing.assert_allclose(got.L.numpy(), expected.L.numpy(), rtol=1e-11, atol=1e-11)


def test_a_failed_pivot_and_the_untouched_columns_are_lapacks():
    torch = require("torch")
    A = np.array([[4.0, 2.0, 0.0, 1.0], [2.0, 5.0, 1.0, 0.0], [0.0, 1.0, -3.0, 2.0], [1.0, 0.0, 2.0, 7.0]])
    got = kiln.linalg.cholesky_ex(kiln.tensor(A))
    assert int(got.info.numpy()) == 3
    L = got.L.numpy()
    assert L[2, 2] == -3.0 - 0.25 and L[3, 2] == 2.0 and L[3, 3] == 7.0  # S_jj - |L[j, :j]|^2, then A as it was
    np.testing.assert_array_equal(L, torch.linalg.cholesky_ex(torch.tensor(A)).L.numpy())


def test_compiled_cholesky_ex_matches_torch_and_its_gradient_on_the_factored_matrices():
    torch = require("torch")
    A = _matrices(3, 5)
    weights = np.random.default_rng(0).standard_normal(A.shape)
    expected_input = torch.tensor(A, requires_grad=True)
    L, info = torch.linalg.cholesky_ex(expected_input)
    fine = (info == 0)[:, None, None]
    (torch.where(fine, L, 0) * torch.tensor(weights)).sum().backward()

    def loss(a):
        L, info = kiln.linalg.cholesky_ex(a)
        return (kiln.where((info == 0).unsqueeze(-1).unsqueeze(-1), L, 0.0) * kiln.tensor(weights)).sum()

    np.testing.assert_allclose(kiln.grad(loss)(A), expected_input.grad.numpy(), rtol=1e-9, atol=1e-12)
    compiled = kiln.compile(lambda a: tuple(kiln.linalg.cholesky_ex(a)), batch_dim=None)
    got_L, got_info = (np.asarray(x) for x in compiled(A))
    np.testing.assert_array_equal(got_info, info.numpy())
    np.testing.assert_allclose(got_L, L.detach().numpy(), rtol=1e-11, atol=1e-11)
    assert (info.numpy() > 0).any() and (info.numpy() == 0).any()
