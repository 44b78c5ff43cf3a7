"""``linalg.cholesky`` reads one triangle, as torch 2.13's (LAPACK's ``potrf``): the lower one, or the upper one with
``upper=True``. kiln factored ``(A + A^T) / 2``, so a non-symmetric input (a covariance assembled by hand, a
triangle filled by ``tril``) gave another factor and another gradient, silently. Values and gradients vs torch,
eagerly and compiled; symmetric inputs as before."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

RNG = np.random.default_rng(4)
BASE = RNG.standard_normal((2, 4, 4))
SPD = BASE @ np.swapaxes(BASE, -1, -2) + 4 * np.eye(4)
INPUTS = {"symmetric": SPD, "garbage above": SPD + np.triu(RNG.standard_normal((2, 4, 4)), 1),
          "garbage below": SPD + np.tril(RNG.standard_normal((2, 4, 4)), -1), "lower only": np.tril(SPD)}
WEIGHTS = np.arange(32.0).reshape(2, 4, 4) / 7


def _factor(name, matrix, upper, compiled=False):
    torch = libraries(name)[0]
    A = torch.tensor(matrix, requires_grad=True)

    def loss(A):
        L = torch.linalg.cholesky(A, upper=upper)
        return L, (L * torch.tensor(WEIGHTS)).sum() + torch.linalg.cholesky_ex(A, upper=upper).L.pow(2).sum()

    if compiled and torch is kiln:
        L = kiln.compile(lambda A: loss(A)[0])(A)
        gradient = kiln.compile(kiln.func.grad(lambda A: loss(A)[1]))(A)
        return np.asarray(L), np.asarray(gradient)
    L, value = loss(A)
    value.backward()
    return L.detach().numpy(), A.grad.numpy()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("matrix", list(INPUTS))
def test_cholesky_reads_the_triangle_torch_reads(matrix, upper, compiled):
    (ours, our_grad), (theirs, their_grad) = (_factor(name, INPUTS[matrix], upper, compiled) for name in ("kiln", "torch"))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(our_grad, their_grad, rtol=1e-10, atol=1e-12)
