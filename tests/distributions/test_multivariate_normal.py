"""MultivariateNormal against torch.distributions in float64: log_prob, entropy, moments, rsample's gradient and
kl_divergence, from each of the three matrix parameters, values and gradients at rtol 1e-10."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.distributions as kd
from oracles import require
from test_distributions_vs_torch import check_against_torch

RNG = np.random.default_rng(7)
N = 4


def _spd(batch=()):
    a = RNG.standard_normal(batch + (N, N))
    return a @ np.swapaxes(a, -1, -2) + N * np.eye(N)


def _tril(batch=()):
    lower = np.tril(RNG.standard_normal(batch + (N, N)), -1)
    return lower + np.eye(N) * RNG.uniform(0.5, 2.0, batch + (N,))[..., None]


LOC, X = RNG.standard_normal((3, N)), RNG.standard_normal((3, N))

CASES = {
    "log_prob.scale_tril": (lambda M, m, l, x: M.MultivariateNormal(m, scale_tril=l).log_prob(x), [LOC, _tril()], [X]),
    "log_prob.covariance": (lambda M, m, c, x: M.MultivariateNormal(m, covariance_matrix=c).log_prob(x), [LOC, _spd()], [X]),
    "log_prob.precision": (lambda M, m, p, x: M.MultivariateNormal(m, precision_matrix=p).log_prob(x), [LOC, _spd()], [X]),
    "log_prob.batched_matrices": (lambda M, m, l, x: M.MultivariateNormal(m, scale_tril=l).log_prob(x), [LOC, _tril((3,))], [X]),
    "entropy": (lambda M, m, c: M.MultivariateNormal(m, covariance_matrix=c).entropy(), [LOC, _spd((3,))], []),
    "moments": (lambda M, m, l: M.MultivariateNormal(m, scale_tril=l).variance * 3 + M.MultivariateNormal(m, scale_tril=l).mean,
                [LOC, _tril()], []),
    "covariance_from_scale": (lambda M, m, l: M.MultivariateNormal(m, scale_tril=l).covariance_matrix, [LOC[0], _tril()], []),
    "precision_from_covariance": (lambda M, m, c: M.MultivariateNormal(m, covariance_matrix=c).precision_matrix, [LOC[0], _spd()], []),
    "kl": (lambda M, a, b, c, d: M.kl_divergence(M.MultivariateNormal(a, scale_tril=b), M.MultivariateNormal(c, covariance_matrix=d)),
           [LOC, _tril(), RNG.standard_normal((3, N)), _spd((3,))], []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_are_torchs(name):
    check_against_torch(*CASES[name])


def test_rsample_is_loc_plus_scale_times_the_noise_and_its_moments_are_the_covariances():
    loc, scale = np.array([1.0, -2.0, 0.5, 3.0]), _tril()
    graph = kiln.trace(lambda m: kd.MultivariateNormal(m, scale_tril=kiln.tensor(scale)).rsample((20000,)), kiln.TensorSpec((N,), "float64"))
    from kiln.backends.numpy import NumpyBackend

    draws = NumpyBackend().compile(graph)(loc, np.int64(3))[0]
    assert draws.shape == (20000, N)
    np.testing.assert_allclose(draws.mean(0), loc, atol=5 * np.sqrt(np.diag(scale @ scale.T).max() / 20000))
    np.testing.assert_allclose(np.cov(draws.T), scale @ scale.T, atol=0.15 * np.abs(scale @ scale.T).max())
    draws_sum = lambda m: kd.MultivariateNormal(m, scale_tril=kiln.tensor(scale)).rsample((5,)).sum()  # noqa: E731
    slope = NumpyBackend().compile(kiln.trace(lambda m: kiln.grad(draws_sum)(m), kiln.TensorSpec((N,), "float64")))
    np.testing.assert_allclose(slope(loc, np.int64(4))[0], np.full(N, 5.0), rtol=1e-12)  # reparameterized: d(loc + L e)/d loc


def test_bad_parameters_are_refused_with_the_values():
    with pytest.raises(ValueError, match="Exactly one of covariance_matrix or precision_matrix or scale_tril"):
        kd.MultivariateNormal(np.zeros(2))
    with pytest.raises(kd.InvalidParameterError, match="positive-definite"):
        kd.MultivariateNormal(np.zeros(2), covariance_matrix=np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(kd.InvalidParameterError, match="lower triangular with a positive diagonal"):
        kd.MultivariateNormal(np.zeros(2), scale_tril=np.array([[1.0, 1.0], [0.0, 1.0]]))
    with pytest.raises(kd.InvalidParameterError, match=r"must be \(3, 3\) matrices"):
        kd.MultivariateNormal(np.zeros(3), covariance_matrix=np.eye(2))
    assert kd.MultivariateNormal(np.zeros((5, 3)), scale_tril=np.eye(3)).batch_shape == (5,)
    assert kd.MultivariateNormal(np.zeros(3), scale_tril=np.eye(3)).event_shape == (3,)
    require("torch")
