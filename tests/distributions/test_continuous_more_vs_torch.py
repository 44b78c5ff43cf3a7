"""StudentT, Cauchy, HalfCauchy, HalfNormal, Gumbel, Weibull, Pareto, GeneralizedPareto, InverseGamma, Kumaraswamy,
FisherSnedecor, LogisticNormal, their KL rules and the transforms torch has (Abs, Softmax, StickBreaking, Independent,
Reshape, Cat, Stack, LowerCholesky) against torch.distributions 2.13 in float64.

Each case is one function of a distributions module, run once with ``kiln.distributions`` (traced and compiled) and
once with ``torch.distributions``: values and the gradients with respect to every parameter at rtol 1e-10 (1e-7
where torch's trigamma enters, see TRIGAMMA_RTOL). Then draws (torch's moments, reproducible under the seed,
pathwise gradients), validate_args refusals, shapes, and the transforms' forward, inverse and log-determinants."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
import kiln.distributions as kd
from oracles import require
from test_distributions_vs_torch import check_against_torch
from test_transformed_distribution_vs_torch import assert_same_values_and_grads

RNG = np.random.default_rng(1)
SHAPE = (3, 4)
TRIGAMMA_RTOL = 1e-7  # torch's digamma derivative (polygamma(1, x)) is off mpmath's by up to 4.9e-10 relative on
# [0.15, 10] (at x = 1.14; kiln's by 7e-16), which entropies and KLs built on digamma amplify where terms cancel


def _real(shape=SHAPE):
    return RNG.standard_normal(shape)


def _positive(shape=SHAPE, low=0.3, high=2.0):
    return RNG.uniform(low, high, shape)


def _probability(shape=SHAPE):
    return RNG.uniform(0.05, 0.95, shape)


DF = RNG.uniform(0.5, 6.0, SHAPE)  # StudentT: NaN mean for df <= 1, infinite variance for df <= 2
PARETO_SCALE, PARETO_ALPHA = _positive(), RNG.uniform(2.1, 5.0, SHAPE)
PARETO_X = PARETO_SCALE + RNG.exponential(1.0, SHAPE)
GP_LOC, GP_SCALE = _real(), _positive()
GP_C = np.array([[-0.6, -0.2, 0.0, 0.25], [0.5, 0.0, -0.05, 1.2], [0.8, -0.3, 0.1, 0.0]])  # c = 0 takes its own branch
GP_X = GP_LOC + GP_SCALE * RNG.uniform(0.02, 0.95, SHAPE) * np.where(GP_C < 0, -1 / np.where(GP_C < 0, GP_C, 1), 3.0)
SIMPLEX = np.exp(_real((3, 5))) / np.exp(_real((3, 5))).sum(-1, keepdims=True)
SIMPLEX = SIMPLEX / SIMPLEX.sum(-1, keepdims=True)


def _moments(make):
    """``mean + 3 variance + 5 stddev + 7 mode`` of ``make(M, *params)``: all four in one value."""
    return lambda M, *a: make(M, *a).mean + make(M, *a).variance * 3 + make(M, *a).stddev * 5 + make(M, *a).mode * 7


# name: (fn(M, *params, *data), params (differentiated), data[, rtol])
CASES = {
    "student_t.log_prob": (lambda M, v, m, s, x: M.StudentT(v, m, s).log_prob(x), [DF, _real(), _positive()], [_real() * 3]),
    "student_t.defaults": (lambda M, v, x: M.StudentT(v).log_prob(x), [DF], [_real()]),
    "student_t.entropy": (lambda M, v, m, s: M.StudentT(v, m, s).entropy(), [DF, _real(), _positive()], [], TRIGAMMA_RTOL),
    "student_t.moments": (_moments(lambda M, v, m, s: M.StudentT(v, m, s)), [DF, _real(), _positive()], []),
    "cauchy.log_prob": (lambda M, m, s, x: M.Cauchy(m, s).log_prob(x), [_real(), _positive()], [_real() * 3]),
    "cauchy.cdf": (lambda M, m, s, x: M.Cauchy(m, s).cdf(x), [_real(), _positive()], [_real() * 3]),
    "cauchy.icdf": (lambda M, m, s, p: M.Cauchy(m, s).icdf(p), [_real(), _positive()], [_probability()]),
    "cauchy.entropy": (lambda M, m, s: M.Cauchy(m, s).entropy() + M.Cauchy(m, s).mode, [_real(), _positive()], []),
    "half_cauchy.log_prob": (lambda M, s, x: M.HalfCauchy(s).log_prob(x), [_positive()], [_positive(low=0.0, high=5.0)]),
    "half_cauchy.cdf": (lambda M, s, x: M.HalfCauchy(s).cdf(x), [_positive()], [_positive(low=0.0, high=5.0)]),
    "half_cauchy.icdf": (lambda M, s, p: M.HalfCauchy(s).icdf(p), [_positive()], [_probability()]),
    "half_cauchy.entropy": (lambda M, s: M.HalfCauchy(s).entropy() + M.HalfCauchy(s).mode, [_positive()], []),
    "half_normal.log_prob": (lambda M, s, x: M.HalfNormal(s).log_prob(x), [_positive()], [_positive(low=0.0, high=4.0)]),
    "half_normal.cdf": (lambda M, s, x: M.HalfNormal(s).cdf(x), [_positive()], [_positive(low=0.0, high=4.0)]),
    "half_normal.icdf": (lambda M, s, p: M.HalfNormal(s).icdf(p), [_positive()], [_probability()]),
    "half_normal.entropy": (lambda M, s: M.HalfNormal(s).entropy(), [_positive()], []),
    "half_normal.moments": (_moments(lambda M, s: M.HalfNormal(s)), [_positive()], []),
    "gumbel.log_prob": (lambda M, m, s, x: M.Gumbel(m, s).log_prob(x), [_real(), _positive()], [_real() * 2]),
    "gumbel.cdf": (lambda M, m, s, x: M.Gumbel(m, s).cdf(x), [_real(), _positive()], [_real()]),
    "gumbel.icdf": (lambda M, m, s, p: M.Gumbel(m, s).icdf(p), [_real(), _positive()], [_probability()]),
    "gumbel.entropy": (lambda M, m, s: M.Gumbel(m, s).entropy(), [_real(), _positive()], []),
    "gumbel.moments": (_moments(lambda M, m, s: M.Gumbel(m, s)), [_real(), _positive()], []),
    "weibull.log_prob": (lambda M, s, k, x: M.Weibull(s, k).log_prob(x), [_positive(), _positive(high=4.0)], [_positive(high=3.0)]),
    "weibull.cdf": (lambda M, s, k, x: M.Weibull(s, k).cdf(x), [_positive(), _positive(high=4.0)], [_positive(high=3.0)]),
    "weibull.icdf": (lambda M, s, k, p: M.Weibull(s, k).icdf(p), [_positive(), _positive(high=4.0)], [_probability()]),
    "weibull.entropy": (lambda M, s, k: M.Weibull(s, k).entropy(), [_positive(), _positive(high=4.0)], []),
    "weibull.moments": (_moments(lambda M, s, k: M.Weibull(s, k)), [_positive(), _positive(low=1.1, high=4.0)], []),
    "pareto.log_prob": (lambda M, s, a, x: M.Pareto(s, a).log_prob(x), [PARETO_SCALE, PARETO_ALPHA], [PARETO_X]),
    "pareto.cdf": (lambda M, s, a, x: M.Pareto(s, a).cdf(x), [PARETO_SCALE, PARETO_ALPHA], [PARETO_X]),
    "pareto.icdf": (lambda M, s, a, p: M.Pareto(s, a).icdf(p), [PARETO_SCALE, PARETO_ALPHA], [_probability()]),
    "pareto.entropy": (lambda M, s, a: M.Pareto(s, a).entropy(), [PARETO_SCALE, _positive()], []),
    "pareto.moments": (_moments(lambda M, s, a: M.Pareto(s, a)), [PARETO_SCALE, PARETO_ALPHA], []),
    "generalized_pareto.log_prob": (lambda M, m, s, c, x: M.GeneralizedPareto(m, s, c).log_prob(x), [GP_LOC, GP_SCALE, GP_C], [GP_X]),
    "generalized_pareto.cdf": (lambda M, m, s, c, x: M.GeneralizedPareto(m, s, c).cdf(x), [GP_LOC, GP_SCALE, GP_C], [GP_X]),
    "generalized_pareto.log_cdf": (lambda M, m, s, c, x: M.GeneralizedPareto(m, s, c).log_cdf(x)
                                   + M.GeneralizedPareto(m, s, c).log_survival_function(x), [GP_LOC, GP_SCALE, GP_C], [GP_X]),
    "generalized_pareto.icdf": (lambda M, m, s, c, p: M.GeneralizedPareto(m, s, c).icdf(p), [GP_LOC, GP_SCALE, GP_C], [_probability()]),
    "generalized_pareto.entropy": (lambda M, m, s, c: M.GeneralizedPareto(m, s, c).entropy() + M.GeneralizedPareto(m, s, c).mode,
                                   [GP_LOC, GP_SCALE, GP_C], []),
    "generalized_pareto.moments": (lambda M, m, s, c: M.GeneralizedPareto(m, s, c).mean + 3 * M.GeneralizedPareto(m, s, c).variance,
                                   [GP_LOC, GP_SCALE, GP_C], []),  # NaN where c >= 1 and c >= 1/2
    "inverse_gamma.log_prob": (lambda M, a, r, x: M.InverseGamma(a, r).log_prob(x), [_positive(high=4.0), _positive()], [_positive()]),
    "inverse_gamma.cdf": (lambda M, r, a, x: M.InverseGamma(a, r).cdf(x), [_positive()], [_positive(high=4.0), _positive()]),
    # torch has no derivative of igamma in a ("not implemented"): the concentration is data there
    "inverse_gamma.entropy": (lambda M, a, r: M.InverseGamma(a, r).entropy(), [_positive(high=4.0), _positive()], [], TRIGAMMA_RTOL),
    "inverse_gamma.moments": (_moments(lambda M, a, r: M.InverseGamma(a, r)), [_positive(high=4.0), _positive()], []),
    "kumaraswamy.log_prob": (lambda M, a, b, x: M.Kumaraswamy(a, b).log_prob(x), [_positive(), _positive()], [_probability()]),
    "kumaraswamy.cdf": (lambda M, a, b, x: M.Kumaraswamy(a, b).cdf(x), [_positive(), _positive()], [_probability()]),
    "kumaraswamy.icdf": (lambda M, a, b, p: M.Kumaraswamy(a, b).icdf(p), [_positive(), _positive()], [_probability()]),
    "kumaraswamy.entropy": (lambda M, a, b: M.Kumaraswamy(a, b).entropy(), [_positive(), _positive()], [], TRIGAMMA_RTOL),
    "kumaraswamy.moments": (_moments(lambda M, a, b: M.Kumaraswamy(a, b)), [_positive(), _positive()], []),  # mode NaN below 1
    "fisher_snedecor.log_prob": (lambda M, d1, d2, x: M.FisherSnedecor(d1, d2).log_prob(x), [_positive(high=9.0), _positive(high=9.0)],
                                 [_positive(low=0.05, high=4.0)]),
    "fisher_snedecor.moments": (_moments(lambda M, d1, d2: M.FisherSnedecor(d1, d2)), [_positive(high=9.0), _positive(high=9.0)], []),
    "logistic_normal.log_prob": (lambda M, m, s, y: M.LogisticNormal(m, s).log_prob(y), [_real(), _positive()], [SIMPLEX]),
    "logistic_normal.scalar": (lambda M, m, s, y: M.LogisticNormal(m, s).log_prob(y), [_real(()), _positive(())],
                               [SIMPLEX[:, :2] / SIMPLEX[:, :2].sum(-1, keepdims=True)]),
    "stick_breaking.flow": (lambda M, m, s, y: M.TransformedDistribution(M.Normal(m, s), [M.transforms.StickBreakingTransform()])
                            .log_prob(y),
                            [_real((3, 4)), _positive((3, 4))], [SIMPLEX]),
    # (TransformedDistribution, TransformedDistribution): equal transforms, so the bases' KL
    "inverse_gamma.kl": (lambda M, a, r, c, d: M.kl_divergence(M.InverseGamma(a, r), M.InverseGamma(c, d)),
                         [_positive(), _positive(), _positive(), _positive()], [], TRIGAMMA_RTOL),
    "half_cauchy.kl": (lambda M, s, t: M.kl_divergence(M.HalfCauchy(s), M.HalfCauchy(t)), [_positive(), _positive()], []),
    "logistic_normal.kl": (lambda M, m, s, n, t: M.kl_divergence(M.LogisticNormal(m, s), M.LogisticNormal(n, t)),
                           [_real(), _positive(), _real(), _positive()], []),
    "expand.log_prob": (lambda M, m, s, x: M.Gumbel(m, s).expand((2, 3, 4)).log_prob(x)
                        + M.Weibull(s, 2.0).expand((2, 3, 4)).log_prob(x.abs())
                        + M.StudentT(3.0, m, s).expand((2, 3, 4)).log_prob(x), [_real(), _positive()], [_real((2, 3, 4))]),
}

_INF = {  # the pairs torch calls infinite: q's support misses part of p's
    ("Beta", "Pareto"): ([_positive(), _positive()], [_positive(), _positive()]),
    ("Exponential", "Pareto"): ([_positive()], [_positive(), _positive()]),
    ("Gamma", "Pareto"): ([_positive(), _positive()], [_positive(), _positive()]),
    ("Laplace", "Pareto"): ([_real(), _positive()], [_positive(), _positive()]),
    ("Normal", "Pareto"): ([_real(), _positive()], [_positive(), _positive()]),
    ("Pareto", "Beta"): ([_positive(), _positive()], [_positive(), _positive()]),
    ("Pareto", "Uniform"): ([_positive(), _positive()], [_real() - 3, _real() + 3]),
    ("Gumbel", "Beta"): ([_real(), _positive()], [_positive(), _positive()]),
    ("Gumbel", "Exponential"): ([_real(), _positive()], [_positive()]),
    ("Gumbel", "Gamma"): ([_real(), _positive()], [_positive(), _positive()]),
    ("Gumbel", "Pareto"): ([_real(), _positive()], [_positive(), _positive()]),
    ("Gumbel", "Uniform"): ([_real(), _positive()], [_real() - 3, _real() + 3]),
}
PARETO_LOW = _positive(low=0.2, high=1.0)  # some below q's scale 0.5: infinite
# (P, Q): (p's params, q's params[, rtol])
KL_PAIRS = {
    ("Cauchy", "Cauchy"): ([_real(), _positive()], [_real(), _positive()]),
    ("HalfNormal", "HalfNormal"): ([_positive()], [_positive()]),
    ("Gumbel", "Gumbel"): ([_real(), _positive()], [_real(), _positive()]),
    ("Pareto", "Pareto"): ([_positive(), _positive()], [_positive(), _positive()]),  # inf where p's scale is below q's
    ("Exponential", "Gumbel"): ([_positive()], [_real(), _positive()]),
    ("Gamma", "Gumbel"): ([_positive(), _positive()], [_real(), _positive()], TRIGAMMA_RTOL),
    ("Gumbel", "Normal"): ([_real(), _positive()], [_real(), _positive()]),
    ("Normal", "Gumbel"): ([_real(), _positive()], [_real(), _positive()]),
    ("Uniform", "Gumbel"): ([_real() - 1, _real() + 3], [_real(), _positive()]),
    ("Pareto", "Exponential"): ([_positive(), _positive(high=3.0)], [_positive()]),  # inf where alpha <= 1
    ("Pareto", "Gamma"): ([_positive(), _positive(high=3.0)], [_positive(), _positive()]),
    ("Pareto", "Normal"): ([_positive(), _positive(low=1.0, high=4.0)], [_real(), _positive()]),  # inf where alpha <= 2
    ("Uniform", "Pareto"): ([PARETO_LOW, PARETO_LOW + _positive()], [np.full(SHAPE, 0.5), _positive()]),
    **_INF,
}
_UNIFORM_LOW_HIGH = {("Uniform", "Gumbel"), ("Uniform", "Pareto")}
for _pair in _UNIFORM_LOW_HIGH | {("Pareto", "Uniform"), ("Gumbel", "Uniform")}:  # Uniform's low < high
    _side = KL_PAIRS[_pair][0 if _pair[0] == "Uniform" else 1]
    _side[1] = np.maximum(_side[1], _side[0] + 0.1)


def _kl_case(pair, p_params, q_params, rtol=1e-10):
    n = len(p_params)
    return (lambda M, *a: M.kl_divergence(getattr(M, pair[0])(*a[:n]), getattr(M, pair[1])(*a[n:])), p_params + q_params, [], rtol)


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_are_torchs(name, float64_default):
    """(float64 default: torch's GeneralizedPareto compares its concentration with a default-dtype ``tensor(0.0)``.)"""
    check_against_torch(*CASES[name])


@pytest.mark.parametrize("pair", sorted(KL_PAIRS), ids="||".join)
def test_kl_divergence_and_its_gradients_are_torchs(pair):
    check_against_torch(*_kl_case(pair, *KL_PAIRS[pair]))


NEW_FAMILIES = {"StudentT", "Cauchy", "HalfCauchy", "HalfNormal", "Gumbel", "Weibull", "Pareto", "GeneralizedPareto",
                "InverseGamma", "Kumaraswamy", "FisherSnedecor", "LogisticNormal"}


def test_every_pair_torch_registers_with_a_new_family_has_a_rule_and_a_test():
    """Pairs with the families kiln had before these (another change adds the discrete ones and their pairs)."""
    torch = require("torch")
    from kiln.frontend.distributions_kl import _KL

    older = {"Bernoulli", "Beta", "Binomial", "Categorical", "Chi2", "Dirichlet", "Exponential", "Gamma", "Independent",
             "Laplace", "LogNormal", "LowRankMultivariateNormal", "MixtureSameFamily", "MultivariateNormal", "Normal",
             "OneHotCategorical", "Poisson", "TransformedDistribution", "Uniform"}
    families = NEW_FAMILIES | older

    def among(registry):
        return {(p.__name__, q.__name__) for p, q in registry
                if {p.__name__, q.__name__} <= families and {p.__name__, q.__name__} & NEW_FAMILIES}

    assert among(torch.distributions.kl._KL_REGISTRY) == among(_KL) == set(KL_PAIRS)


def test_means_and_variances_torch_fills_are_torchs():
    """Cauchy's NaN mean and infinite variance, HalfCauchy's infinite ones, shaped as the batch."""
    torch = require("torch")
    for name, args in [("Cauchy", (np.zeros((2, 3)), 1.0)), ("HalfCauchy", (np.ones(3),))]:
        ours, theirs = getattr(kd, name)(*args), getattr(torch.distributions, name)(*[torch.tensor(a) for a in args])
        for moment in ("mean", "variance", "mode"):
            np.testing.assert_array_equal(getattr(ours, moment).numpy(), getattr(theirs, moment).numpy())


# Draws ------------------------------------------------------------------------------------------------------------

DRAWS = 20000
FAMILIES = {  # 2-wide batches whose fourth moments are finite (so the variance check has a standard error)
    "StudentT": ([5.0, 12.0], [0.5, -1.0], [1.0, 2.0]),
    "HalfNormal": ([0.5, 2.0],),
    "Gumbel": ([0.5, -1.0], [1.0, 2.5]),
    "Weibull": ([1.5, 0.5], [0.8, 3.0]),
    "Pareto": ([1.0, 0.3], [6.0, 9.0]),
    "GeneralizedPareto": ([0.5, -1.0], [1.0, 2.0], [-0.3, 0.2]),
    "InverseGamma": ([6.0, 9.0], [1.0, 3.0]),
    "Kumaraswamy": ([0.5, 3.0], [2.0, 0.7]),
    "FisherSnedecor": ([3.0, 10.0], [12.0, 30.0]),
}


def _make(library, name, params):
    return getattr(library.distributions, name)(*[library.tensor(p) for p in params])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_draws_have_torchs_moments_and_repeat_under_the_seed(float64_default, name):
    torch, params = float64_default, FAMILIES[name]
    kiln.manual_seed(11)
    draws = _make(kiln, name, params).sample((DRAWS,))
    kiln.manual_seed(11)
    again = _make(kiln, name, params).sample((DRAWS,))
    assert tuple(draws.shape) == (DRAWS, 2) and draws.dtype == kiln.float64 and not draws.requires_grad
    values = draws.numpy()
    np.testing.assert_array_equal(values, again.numpy())
    expected = _make(torch, name, params)
    mean, variance = expected.mean.numpy(), expected.variance.numpy()
    assert np.all(np.abs(values.mean(0) - mean) < 5 * np.sqrt(variance / DRAWS)), (values.mean(0), mean)
    fourth = np.mean((values - mean) ** 4, 0)
    assert np.all(np.abs(values.var(0) - variance) < 5 * np.sqrt((fourth - variance**2) / DRAWS)), (values.var(0), variance)
    assert np.isfinite(expected.log_prob(torch.tensor(values)).numpy()).all()  # every draw inside torch's support


def _ks_distance(draws: np.ndarray, cdf: np.ndarray) -> float:
    n = draws.shape[0]
    ranks = np.arange(1, n + 1)[:, None]
    return float(max(np.max(ranks / n - cdf), np.max(cdf - (ranks - 1) / n)))


@pytest.mark.parametrize("name, params", [("Cauchy", ([0.5, -2.0], [1.0, 3.0])), ("HalfCauchy", ([0.5, 4.0],)),
                                          ("Gumbel", ([0.5, -1.0], [1.0, 2.5])), ("Weibull", ([1.5, 0.5], [0.8, 3.0]))])
def test_draws_follow_torchs_cdf(float64_default, name, params):
    """The Kolmogorov-Smirnov distance to torch's cdf below its 0.1% critical value (Cauchy's have no moments)."""
    torch = float64_default
    kiln.manual_seed(5)
    draws = np.sort(_make(kiln, name, params).sample((DRAWS,)).numpy(), axis=0)
    cdf = _make(torch, name, params).cdf(torch.tensor(draws)).numpy()
    assert _ks_distance(draws, cdf) < 1.95 / math.sqrt(DRAWS)


def test_logistic_normal_draws_are_on_the_simplex_with_normal_logits(float64_default):
    loc, scale = np.array([0.5, -1.0, 0.0]), np.array([1.0, 0.5, 2.0])
    kiln.manual_seed(3)
    draws = kd.LogisticNormal(kiln.tensor(loc), kiln.tensor(scale)).sample((DRAWS,)).numpy()
    assert draws.shape == (DRAWS, 4) and np.all(draws > 0)
    np.testing.assert_allclose(draws.sum(-1), 1.0, rtol=1e-12)
    logits = kd.transforms.StickBreakingTransform().inv(kiln.tensor(draws)).numpy()  # back to the Normal draws
    assert np.all(np.abs(logits.mean(0) - loc) < 5 * scale / math.sqrt(DRAWS))
    np.testing.assert_allclose(logits.std(0), scale, rtol=0.03)


def test_draws_inside_a_compiled_function_are_fresh_each_call(float64_default):
    def draw(loc, scale):
        return kd.StudentT(4.0, loc, scale).rsample((5000,)) + kd.Gumbel(loc, scale).sample((5000,))

    compiled = kiln.compile(draw, seed=0)
    first, second = (compiled(kiln.tensor([0.0, 1.0]), kiln.tensor([1.0, 2.0])).numpy() for _ in range(2))
    assert first.shape == (5000, 2) and not np.array_equal(first, second)
    np.testing.assert_allclose(first.mean(0), [EULER, 1 + 2 * EULER + 1], atol=0.15)


EULER = 0.5772156649015329


def _pathwise(name, params, differentiated):
    """The gradient of the mean of 4000 draws with respect to parameter ``differentiated``, and the draws."""
    tensors = [kiln.tensor(np.asarray(p, dtype=np.float64), requires_grad=True) for p in params]
    kiln.manual_seed(7)
    draws = getattr(kd, name)(*tensors).rsample((4000,))
    draws.mean(0).sum().backward()
    return tensors[differentiated].grad.numpy(), draws.detach().numpy()


@pytest.mark.parametrize("name, params", [("StudentT", ([3.0, 8.0], [0.5, -1.0], [1.0, 2.0])), ("Cauchy", ([0.5, -1.0], [1.0, 2.0])),
                                          ("Gumbel", ([0.5, -1.0], [1.0, 2.0])),
                                          ("GeneralizedPareto", ([0.5, -1.0], [1.0, 2.0], [0.3, -0.2]))])
def test_rsample_moves_with_the_location(name, params):
    location = 1 if name == "StudentT" else 0
    gradient, _ = _pathwise(name, params, location)
    np.testing.assert_allclose(gradient, 1.0, rtol=1e-12)  # d/dloc of the mean of loc + scale * noise


@pytest.mark.parametrize("name, params, scale", [("HalfNormal", ([0.5, 2.0],), 0), ("HalfCauchy", ([0.5, 2.0],), 0),
                                                 ("Weibull", ([0.5, 2.0], [0.8, 3.0]), 0), ("Pareto", ([0.5, 2.0], [3.0, 5.0]), 0),
                                                 ("InverseGamma", ([2.0, 5.0], [0.5, 2.0]), 1)])
def test_rsample_scales_with_the_scale(name, params, scale):
    """Draws proportional to ``scale`` (InverseGamma's to ``rate``): the pathwise gradient is ``mean(x) / scale``."""
    gradient, draws = _pathwise(name, params, scale)
    np.testing.assert_allclose(gradient, draws.mean(0) / np.asarray(params[scale]), rtol=1e-10)


def test_rsample_gradients_reach_the_shapes():
    """Kumaraswamy's draw ``(1 - u^(1/b))^(1/a)`` has ``dx/da = -x log(x) / a``; FisherSnedecor's and StudentT's reach
    their degrees of freedom through the Gamma draws' implicit gradient (finite, and E[x] = d2 / (d2 - 2) gives
    d/d df1 of the mean 0 in expectation)."""
    gradient, draws = _pathwise("Kumaraswamy", ([0.5, 3.0], [2.0, 0.7]), 0)
    np.testing.assert_allclose(gradient, (-draws * np.log(draws) / [0.5, 3.0]).mean(0), rtol=1e-8)
    for name, params in [("FisherSnedecor", ([4.0, 9.0], [12.0, 30.0])), ("StudentT", ([3.0, 8.0], [0.0, 0.0], [1.0, 1.0]))]:
        gradient, _ = _pathwise(name, params, 0)
        assert np.all(np.isfinite(gradient)) and np.all(gradient != 0)



# Refusals, shapes and properties -----------------------------------------------------------------------------------

INVALID = {  # (family, parameters): torch's ValueError on building it
    "StudentT df": ("StudentT", (-1.0,)), "StudentT scale": ("StudentT", (2.0, 0.0, -1.0)), "Cauchy": ("Cauchy", (0.0, 0.0)),
    "HalfCauchy": ("HalfCauchy", (-1.0,)), "HalfNormal": ("HalfNormal", (0.0,)), "Gumbel": ("Gumbel", (math.nan, 1.0)),
    "Weibull scale": ("Weibull", (-1.0, 1.0)), "Weibull concentration": ("Weibull", (1.0, 0.0)), "Pareto": ("Pareto", (1.0, -2.0)),
    "GeneralizedPareto scale": ("GeneralizedPareto", (0.0, -1.0, 0.1)), "GeneralizedPareto c": ("GeneralizedPareto", (0.0, 1.0, math.nan)),
    "InverseGamma": ("InverseGamma", (-1.0, 1.0)), "Kumaraswamy": ("Kumaraswamy", (1.0, -1.0)),
    "FisherSnedecor": ("FisherSnedecor", (0.0, 1.0)), "LogisticNormal": ("LogisticNormal", ([0.0, 1.0], [1.0, -1.0])),
}
OUTSIDE = {  # (family, parameters, value): torch's ValueError from log_prob
    "HalfNormal": ("HalfNormal", (1.0,), -1.0), "HalfCauchy": ("HalfCauchy", (1.0,), -0.5), "Weibull": ("Weibull", (1.0, 2.0), 0.0),
    "Pareto below scale": ("Pareto", (2.0, 1.0), 1.5), "Kumaraswamy": ("Kumaraswamy", (1.0, 2.0), 1.5),
    "GeneralizedPareto above": ("GeneralizedPareto", (0.0, 1.0, -0.5), 3.0),
    "GeneralizedPareto below": ("GeneralizedPareto", (1.0, 1.0, 0.5), 0.5),
    "InverseGamma": ("InverseGamma", (2.0, 1.0), -1.0), "FisherSnedecor": ("FisherSnedecor", (2.0, 3.0), -1.0),
    "LogisticNormal": ("LogisticNormal", ([0.0, 1.0], [1.0, 1.0]), [0.5, 0.2, 0.2]),
}


def _build(library, name, params):
    tensors = [library.tensor(p, dtype=library.float64) for p in params]
    return lambda **options: getattr(library.distributions, name)(*tensors, **options)


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_parameters_are_refused_as_torch(case):
    name, params = INVALID[case]
    for library in (kiln, require("torch")):
        with pytest.raises(ValueError):
            _build(library, name, params)()
    _build(kiln, name, params)(validate_args=False)  # not checked (torch's StudentT and FisherSnedecor still refuse:
    # they build a validating Chi2 or Gamma of df whatever validate_args says)


@pytest.mark.parametrize("case", sorted(OUTSIDE))
def test_values_outside_the_support_are_refused_as_torch(case, float64_default):
    name, params, value = OUTSIDE[case]
    for library in (kiln, require("torch")):
        with pytest.raises(ValueError):
            _build(library, name, params)().log_prob(library.tensor(value, dtype=library.float64))
        _build(library, name, params)(validate_args=False).log_prob(library.tensor(value, dtype=library.float64))


SHAPES = {
    "StudentT": lambda M, T: M.StudentT(T(np.ones((3, 1))) * 3, 0.0, T(np.ones(4))),
    "Cauchy": lambda M, T: M.Cauchy(0.0, 1.0),
    "HalfCauchy": lambda M, T: M.HalfCauchy(T(np.ones((2, 3)))),
    "HalfNormal": lambda M, T: M.HalfNormal(T(np.ones(3))),
    "Gumbel": lambda M, T: M.Gumbel(T(np.zeros((3, 1))), T(np.ones(4))),
    "Weibull": lambda M, T: M.Weibull(T(np.ones(3)), 2.0),
    "Pareto": lambda M, T: M.Pareto(1.0, T(np.full((2, 3), 3.0))),
    "GeneralizedPareto": lambda M, T: M.GeneralizedPareto(T(np.zeros(3)), 1.0, 0.2),
    "InverseGamma": lambda M, T: M.InverseGamma(T(np.ones((2, 1))), T(np.ones(3))),
    "Kumaraswamy": lambda M, T: M.Kumaraswamy(T(np.ones(3)), 2.0),
    "FisherSnedecor": lambda M, T: M.FisherSnedecor(T(np.full(3, 4.0)), 5.0),
    "LogisticNormal": lambda M, T: M.LogisticNormal(T(np.zeros((2, 3))), T(np.ones(3))),
    "LogisticNormal scalar": lambda M, T: M.LogisticNormal(0.0, 1.0),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shapes_flags_and_expand_are_torchs(name, float64_default):
    torch = float64_default
    ours, theirs = SHAPES[name](kd, kiln.tensor), SHAPES[name](torch.distributions, torch.tensor)
    assert (ours.batch_shape, ours.event_shape) == (tuple(theirs.batch_shape), tuple(theirs.event_shape))
    assert ours.has_rsample == theirs.has_rsample and ours.support.event_dim == theirs.support.event_dim
    assert isinstance(ours, kd.TransformedDistribution) == isinstance(theirs, torch.distributions.TransformedDistribution)
    assert set(ours.arg_constraints) == set(theirs.arg_constraints)
    bigger = (5,) + tuple(theirs.batch_shape)
    mine, reference = ours.expand(bigger), theirs.expand(bigger)
    assert type(mine) is type(ours) and (mine.batch_shape, mine.event_shape) == (tuple(reference.batch_shape), tuple(reference.event_shape))
    assert tuple(mine.sample((7,)).shape) == tuple(reference.sample((7,)).shape)
    shape = kiln.trace(lambda: SHAPES[name](kd, kiln.tensor).rsample((2,))).outputs[0].type.shape
    assert shape == tuple(theirs.rsample((2,)).shape)
    value = reference.sample()
    np.testing.assert_allclose(mine.log_prob(kiln.tensor(value.numpy())).numpy(), reference.log_prob(value).numpy(), rtol=1e-12)


def test_a_prior_built_outside_a_trace_is_used_inside_each():
    """Like ``Normal(0.0, 1.0)`` in a Module's ``__init__``: a transformed family's base and transforms follow."""
    prior = kd.Gumbel(0.5, 2.0)

    def score(x):
        return prior.log_prob(x) + kd.kl_divergence(kd.Normal(x, 1.0), prior) + prior.cdf(x)

    x = np.array([-1.0, 0.3, 2.0])
    torch = require("torch")
    reference = torch.distributions.Gumbel(torch.tensor(0.5, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    t = torch.tensor(x)
    expected = reference.log_prob(t) + torch.distributions.kl_divergence(torch.distributions.Normal(t, 1.0), reference) + reference.cdf(t)
    for _ in range(2):
        np.testing.assert_allclose(kiln.compile(score, batch_dim=None)(x), expected.numpy(), rtol=1e-6)  # float32 prior


# Transforms -------------------------------------------------------------------------------------------------------

X = np.linspace(-1.5, 2.0, 12).reshape(3, 4)
LOC, SCALE = np.linspace(-0.5, 0.5, 4), np.linspace(0.5, 2.0, 4)
TRANSFORMS = {  # name: (make(T, loc, scale), input from x, whether it has a log-determinant)
    "abs": (lambda T, p: T.AbsTransform(), lambda x: x, False),
    "softmax": (lambda T, p: T.SoftmaxTransform(), lambda x: x, False),
    "stick_breaking": (lambda T, p: T.StickBreakingTransform(), lambda x: x, True),
    "lower_cholesky": (lambda T, p: T.LowerCholeskyTransform(), lambda x: x[:, :3], False),
    "reshape": (lambda T, p: T.ReshapeTransform((3, 4), (2, 6)), lambda x: x, True),
    "independent": (lambda T, p: T.IndependentTransform(T.AffineTransform(p[0], p[1]), 1), lambda x: x, True),
    "independent of stick_breaking": (lambda T, p: T.IndependentTransform(T.StickBreakingTransform(), 1), lambda x: x, True),
    "cat along the batch": (lambda T, p: T.CatTransform([T.ExpTransform(), T.AffineTransform(p[0], p[1])], 0, [1, 2]), lambda x: x, True),
    "cat along the event": (lambda T, p: T.CatTransform([T.TanhTransform(), T.AffineTransform(p[0][:3], p[1][:3], event_dim=1)],
                                                        -1, [1, 3]),
                            lambda x: x, True),
    "stack": (lambda T, p: T.StackTransform([T.ExpTransform(), T.SigmoidTransform(), T.AffineTransform(0.5, -2.0), T.TanhTransform()], 1),
              lambda x: x, True),
    "corr_cholesky": (lambda T, p: T.CorrCholeskyTransform(), lambda x: x[:, :3], True),
    "corr_cholesky 4x4": (lambda T, p: T.CorrCholeskyTransform(), lambda x: x.reshape(2, 6) * 0.5, True),
    "positive_definite": (lambda T, p: T.PositiveDefiniteTransform(), lambda x: x[:, :3], False),
    "cumulative_distribution": (lambda T, p: T.CumulativeDistributionTransform(_library(T).Normal(p[0], p[1])), lambda x: x, True),
    "compose with stick_breaking": (lambda T, p: T.ComposeTransform([T.AffineTransform(p[0][:3], p[1][:3]), T.StickBreakingTransform()]),
                                    lambda x: x[:, :3], True),
}


def _library(transforms):
    """The distributions module of a transforms module."""
    return kd if transforms is kd.transforms else require("torch").distributions


def _run_transform(library, name):
    """Forward, inverse and log-determinant, with the gradients of a function of them to the input and parameters."""
    make, source, has_log_det = TRANSFORMS[name]
    x, loc, scale = (library.tensor(a, dtype=library.float64, requires_grad=True) for a in (X, LOC, SCALE))
    transform = make(library.distributions.transforms, (loc, scale))
    inputs = source(x)
    y = transform(inputs)
    outputs = [y, transform.inv(y)] + ([transform.log_abs_det_jacobian(inputs, y)] if has_log_det else [])
    sum(o.sin().sum() for o in outputs).backward()
    return [o.detach().numpy() for o in outputs], [None if t.grad is None else np.asarray(t.grad) for t in (x, loc, scale)]


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_forward_inverse_and_log_det_are_torchs(name):
    torch = require("torch")
    assert_same_values_and_grads(_run_transform(kiln, name), _run_transform(torch, name))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_properties_are_torchs(name):
    torch = require("torch")
    make, _, has_log_det = TRANSFORMS[name]
    params = (np.linspace(-0.5, 0.5, 4), np.linspace(0.5, 2.0, 4))
    ours = make(kd.transforms, tuple(kiln.tensor(p) for p in params))
    theirs = make(torch.distributions.transforms, tuple(torch.tensor(p) for p in params))
    assert ours.bijective == theirs.bijective
    assert (ours.domain.event_dim, ours.codomain.event_dim) == (theirs.domain.event_dim, theirs.codomain.event_dim)
    assert ours.inv.inv == ours
    assert (ours.inv.domain.event_dim, ours.inv.codomain.event_dim) == (theirs.codomain.event_dim, theirs.domain.event_dim)
    for shape in [(3, 4), (2, 3, 4)]:
        for method in ("forward_shape", "inverse_shape"):
            try:
                expected = tuple(getattr(theirs, method)(torch.Size(shape)))
            except (ValueError, RuntimeError) as error:  # torch's shape refusals (RuntimeError: a broadcast)
                with pytest.raises(ValueError if isinstance(error, ValueError) else Exception):
                    getattr(ours, method)(shape)
            else:
                assert getattr(ours, method)(shape) == expected
    try:
        sign = theirs.sign
    except NotImplementedError:
        with pytest.raises(NotImplementedError):
            ours.sign  # noqa: B018
    else:
        assert np.all(np.asarray(ours.sign) == np.asarray(sign))
    assert ours == ours


@pytest.mark.parametrize("name", ["abs", "softmax", "stick_breaking", "lower_cholesky", "reshape", "independent", "stack"])
def test_transforms_equal_as_torchs(name):
    """Parameterless ones equal any of their class; the functors and ReshapeTransform only themselves."""
    torch = require("torch")
    make = TRANSFORMS[name][0]
    params = (1.0, 2.0)
    assert (make(kd.transforms, params) == make(kd.transforms, params)) == (
        make(torch.distributions.transforms, params) == make(torch.distributions.transforms, params))


def test_transform_codomains_and_refusals_are_torchs():
    torch = require("torch")
    T, TT = kd.transforms, torch.distributions.transforms
    y = T.StickBreakingTransform()(kiln.tensor(X)).numpy()
    assert T.StickBreakingTransform().codomain.check(y).all() and not T.StickBreakingTransform().codomain.check(y * 1.1).any()
    assert T.LowerCholeskyTransform().codomain.check(T.LowerCholeskyTransform()(kiln.tensor(X[:, :3])).numpy())
    factor = T.CorrCholeskyTransform()(kiln.tensor(X[:, :3])).numpy()
    assert T.CorrCholeskyTransform().codomain.check(factor).all() and not T.CorrCholeskyTransform().codomain.check(factor * 1.01).any()
    cat = T.CatTransform([T.ExpTransform(), T.SigmoidTransform().inv], -1, [2, 2])  # (real, unit) -> (positive, real)
    values = np.array([[1.0, 2.0, 0.5, 0.5], [1.0, -2.0, 0.5, 2.0]])
    assert cat.domain.event_dim == cat.codomain.event_dim == 0
    assert cat.domain.check(values).tolist() == [[True] * 4, [True, True, True, False]]
    assert cat.codomain.check(values).tolist() == [[True] * 4, [True, False, True, True]]
    stack = T.StackTransform([T.ExpTransform(), T.SigmoidTransform()], dim=-1)
    assert stack.codomain.event_dim == TT.StackTransform([TT.ExpTransform(), TT.SigmoidTransform()], dim=-1).codomain.event_dim
    with pytest.raises(ValueError, match="different numbers of elements"):
        T.ReshapeTransform((3,), (2, 2))
    with pytest.raises(AssertionError, match="must equal"):
        T.CatTransform([T.ExpTransform()], 0, [2])(kiln.tensor(X))
    with pytest.raises(ValueError, match="Too few dimensions"):
        T.IndependentTransform(T.ExpTransform(), 2)(kiln.tensor(np.ones(3)))


def test_stick_breaking_flow_samples_and_scores_as_torch(float64_default):
    """torch-style ``TransformedDistribution(Normal(...), [StickBreakingTransform()])``: shapes, support, and the
    log_prob of its own draws."""
    torch = float64_default
    loc, scale = np.linspace(-1.0, 1.0, 3), np.linspace(0.5, 1.5, 3)
    ours = kd.TransformedDistribution(kd.Normal(kiln.tensor(loc), kiln.tensor(scale)), [kd.transforms.StickBreakingTransform()])
    theirs = torch.distributions.TransformedDistribution(torch.distributions.Normal(torch.tensor(loc), torch.tensor(scale)),
                                                         [torch.distributions.transforms.StickBreakingTransform()])
    assert (ours.batch_shape, ours.event_shape) == (tuple(theirs.batch_shape), tuple(theirs.event_shape)) == ((), (4,))
    draws = ours.rsample((6,))
    assert tuple(draws.shape) == (6, 4) and ours.support.check(draws.numpy()).all()
    np.testing.assert_allclose(ours.log_prob(draws).numpy(), theirs.log_prob(torch.tensor(draws.numpy())).numpy(), rtol=1e-12)
