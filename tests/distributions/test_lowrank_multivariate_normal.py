"""LowRankMultivariateNormal against torch.distributions in float64: log_prob, entropy, mean, variance, the
covariance, precision and scale_tril matrices, batched and broadcast parameters, values and gradients with respect to
loc, cov_factor and cov_diag at rtol 1e-10 (traced and compiled); kl_divergence with itself and MultivariateNormal
both ways; rsample's moments and its reparameterized gradient;
torch's errors for bad shapes and the constraint checks."""

from __future__ import annotations

import re

import numpy as np
import pytest

import kiln
import kiln.distributions as kd
from kiln.backends.numpy import NumpyBackend
from oracles import require
from test_distributions_vs_torch import check_against_torch

RNG = np.random.default_rng(11)
N, RANK = 5, 2
LOC, X = RNG.standard_normal((3, N)), RNG.standard_normal((4, 3, N))
FACTOR, DIAGONAL = RNG.standard_normal((N, RANK)), RNG.uniform(0.3, 2.0, N)
BATCHED_FACTOR, BATCHED_DIAGONAL = RNG.standard_normal((3, N, RANK)), RNG.uniform(0.3, 2.0, (3, N))


def _tril():
    return np.tril(RNG.standard_normal((N, N)), -1) + np.diag(RNG.uniform(0.5, 2.0, N))


def _low_rank(M, loc, factor, diagonal):
    return M.LowRankMultivariateNormal(loc, factor, diagonal)


SINGLE, BATCHED = [LOC, FACTOR, DIAGONAL], [LOC, BATCHED_FACTOR, BATCHED_DIAGONAL]
OTHER_LOC = LOC[::-1].copy()


def _log_prob(M, m, w, d, x):
    return _low_rank(M, m, w, d).log_prob(x)


CASES = {
    "log_prob": (_log_prob, SINGLE, [X]),
    "log_prob.batched": (_log_prob, BATCHED, [X]),
    "log_prob.broadcast_loc": (_log_prob, [LOC[0], BATCHED_FACTOR, DIAGONAL], [X]),
    "entropy": (lambda M, m, w, d: _low_rank(M, m, w, d).entropy(), [LOC, BATCHED_FACTOR, DIAGONAL], []),
    "entropy.batch_from_loc": (lambda M, m, w, d: _low_rank(M, m, w, d).entropy(), SINGLE, []),
    "moments": (lambda M, m, w, d: _low_rank(M, m, w, d).variance * 3 + _low_rank(M, m, w, d).mean,
                [LOC, BATCHED_FACTOR, DIAGONAL], []),
    "covariance_matrix": (lambda M, m, w, d: _low_rank(M, m, w, d).covariance_matrix, BATCHED, []),
    "precision_matrix": (lambda M, m, w, d: _low_rank(M, m, w, d).precision_matrix, BATCHED, []),
    "scale_tril": (lambda M, m, w, d: _low_rank(M, m, w, d).scale_tril, [LOC[0], FACTOR, DIAGONAL], []),
    "kl.low_rank_low_rank": (lambda M, m, w, d, m2, w2, d2: M.kl_divergence(_low_rank(M, m, w, d),
                                                                            _low_rank(M, m2, w2, d2)),
                             SINGLE + [OTHER_LOC, BATCHED_FACTOR, BATCHED_DIAGONAL], []),
    "kl.full_low_rank": (lambda M, m, l, m2, w2, d2: M.kl_divergence(M.MultivariateNormal(m, scale_tril=l),
                                                                     _low_rank(M, m2, w2, d2)),
                         [LOC, _tril(), OTHER_LOC, BATCHED_FACTOR, DIAGONAL], []),
    "kl.low_rank_full": (lambda M, m, w, d, m2, l: M.kl_divergence(_low_rank(M, m, w, d),
                                                                   M.MultivariateNormal(m2, scale_tril=l)),
                         BATCHED + [OTHER_LOC, _tril()], []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_are_torchs(name):
    check_against_torch(*CASES[name])


def test_shapes_are_torchs():
    torch = require("torch")
    for params in (SINGLE, [LOC[0], BATCHED_FACTOR, DIAGONAL], BATCHED):
        ours = kd.LowRankMultivariateNormal(*params)
        theirs = torch.distributions.LowRankMultivariateNormal(*map(torch.tensor, params))
        assert (ours.batch_shape, ours.event_shape) == (tuple(theirs.batch_shape), tuple(theirs.event_shape))


def test_rsample_moments_are_the_covariance_and_its_gradient_is_reparameterized():
    loc = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
    def draws_of(m):
        return kd.LowRankMultivariateNormal(m, kiln.tensor(FACTOR), kiln.tensor(DIAGONAL)).rsample((40000,))

    graph = kiln.trace(draws_of, kiln.TensorSpec((N,), "float64"))
    draws = NumpyBackend().compile(graph)(loc, np.int64(3))[0]
    covariance = FACTOR @ FACTOR.T + np.diag(DIAGONAL)
    assert draws.shape == (40000, N)
    np.testing.assert_allclose(draws.mean(0), loc, atol=5 * np.sqrt(np.diag(covariance).max() / 40000))
    np.testing.assert_allclose(np.cov(draws.T), covariance, atol=0.1 * np.abs(covariance).max())

    def draws_sum(m, w, d):
        return kd.LowRankMultivariateNormal(m, w, d).rsample((5,)).sum()

    specs = [kiln.TensorSpec(shape, "float64") for shape in ((N,), (N, RANK), (N,))]
    slopes = NumpyBackend().compile(kiln.trace(lambda *args: kiln.grad(draws_sum, argnums=(0, 1, 2))(*args), *specs))
    loc_slope, factor_slope, diagonal_slope = slopes(loc, FACTOR, DIAGONAL, np.int64(4))
    np.testing.assert_allclose(loc_slope, np.full(N, 5.0), rtol=1e-12)  # d(loc + W e + sqrt(D) e') / d loc
    assert np.abs(factor_slope).max() > 0 and np.abs(diagonal_slope).max() > 0


def test_bad_parameters_raise_torchs_errors():
    torch = require("torch")
    bad = [(LOC, FACTOR[:3], DIAGONAL), (LOC, FACTOR, DIAGONAL[:3]), (np.float64(1.0), FACTOR, DIAGONAL),
           (LOC, DIAGONAL, DIAGONAL)]
    for params in bad:
        with pytest.raises(ValueError) as theirs:
            torch.distributions.LowRankMultivariateNormal(*map(torch.tensor, params))
        words = str(theirs.value).replace("torch.Size([5])", "(5,)")  # torch's words, kiln's shape
        with pytest.raises(ValueError, match=re.escape(words)):
            kd.LowRankMultivariateNormal(*params)
    with pytest.raises(kd.InvalidParameterError, match="cov_diag .* a vector of positive numbers"):
        kd.LowRankMultivariateNormal(LOC, FACTOR, -DIAGONAL)
