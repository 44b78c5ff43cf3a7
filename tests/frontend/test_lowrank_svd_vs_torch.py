"""``kiln.svd_lowrank`` and ``kiln.pca_lowrank`` against torch's on matrices of rank at most ``q``, where the result is
unique up to the singular vectors' signs: singular values, the reconstruction, orthonormal factors, the gradient of
the singular values (unique there too), wide and batched matrices, ``M``, and inside a compiled function."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

RNG = np.random.default_rng(0)


def _rank(rank, *shape):
    return RNG.standard_normal(shape[:-1] + (rank,)) @ RNG.standard_normal(shape[:-2] + (rank, shape[-1]))


def _factors(lib, function, A, **kwargs):
    U, S, V = function(lib)(lib.tensor(A), **kwargs)
    return U.detach().numpy(), S.detach().numpy(), V.detach().numpy()


@pytest.mark.parametrize("shape", [(8, 5), (4, 9), (2, 7, 6)], ids=["tall", "wide", "batched"])
@pytest.mark.parametrize("name", ["svd_lowrank", "pca_lowrank"])
def test_rank_q_factors_match_torch(shape, name):
    torch = require_torch()
    A = _rank(3, *shape)
    ours, theirs = _factors(kiln, lambda lib: getattr(lib, name), A, q=3), _factors(torch, lambda lib: getattr(lib, name), A, q=3)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-10)
    centred = A - A.mean(-2, keepdims=True) if name == "pca_lowrank" else A
    U, S, V = ours
    np.testing.assert_allclose((U * S[..., None, :]) @ np.swapaxes(V, -1, -2), centred, atol=1e-10)
    np.testing.assert_allclose(np.swapaxes(U, -1, -2) @ U, np.broadcast_to(np.eye(3), S.shape[:-1] + (3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.abs(U), np.abs(theirs[0]), atol=1e-8)  # the same vectors, up to sign


def test_singular_value_gradient_matches_torch():
    torch = require_torch()
    A = _rank(3, 7, 5)
    grads = []
    for lib in (kiln, torch):
        a = lib.tensor(A, requires_grad=True)
        (lib.svd_lowrank(a, q=3)[1] ** 2).sum().backward()
        grads.append(a.grad.numpy() if lib is torch else np.asarray(a.grad))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grads[0], 2 * A, rtol=1e-8, atol=1e-10)  # sum of squared singular values is |A|_F^2


def test_subtracted_mean_and_compiled_call():
    A, M = _rank(2, 6, 4), RNG.standard_normal((1, 4))
    S = np.asarray(kiln.svd_lowrank(kiln.tensor(A + M), q=2, M=kiln.tensor(M))[1])
    np.testing.assert_allclose(S, np.linalg.svd(A, compute_uv=False)[:2], rtol=1e-10)
    compiled = kiln.compile(lambda a: kiln.svd_lowrank(a, q=2, niter=1)[1], seed=0)
    np.testing.assert_allclose(np.asarray(compiled(kiln.tensor(A))), np.linalg.svd(A, compute_uv=False)[:2], rtol=1e-10)


def test_too_large_q_says_what():
    with pytest.raises(ValueError, match="q=5 must be positive and at most min"):
        kiln.svd_lowrank(kiln.ones(3, 4), q=5)
