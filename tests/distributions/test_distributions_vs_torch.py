"""kiln.distributions against torch.distributions in float64: log_prob, cdf/icdf, entropy, the moments and
kl_divergence, their values and their gradients with respect to every parameter, at rtol 1e-10.

Each case is one function of a distributions module, run once with ``kiln.distributions`` (traced and compiled) and
once with ``torch.distributions``: the same code, so the APIs must match too."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import kiln
import kiln.distributions as kd
from oracles import require

RNG = np.random.default_rng(0)
SHAPE = (3, 4)


def _real(shape=SHAPE):
    return RNG.standard_normal(shape)


def _positive(shape=SHAPE):
    return RNG.uniform(0.3, 2.0, shape)


def _probability(shape=SHAPE):
    return RNG.uniform(0.05, 0.95, shape)


def _nonnegative(shape=SHAPE):
    return RNG.exponential(1.0, shape)


def _bits(shape=SHAPE):
    return RNG.integers(0, 2, shape).astype(np.float64)


def _classes(shape=(5, 3)):
    return RNG.integers(0, 4, shape)


LOW = RNG.uniform(-2, 0, SHAPE)
HIGH = LOW + RNG.uniform(0.5, 3, SHAPE)
INSIDE = LOW + (HIGH - LOW) * RNG.uniform(0.01, 0.99, SHAPE)
AROUND = RNG.uniform(-3, 3, SHAPE)  # some below LOW, some above HIGH: the cdf clamps
TRIALS = RNG.integers(0, 9, SHAPE).astype(np.float64)  # Binomial's total_count, some 0
COUNTS = np.floor(TRIALS * RNG.uniform(0, 1, SHAPE))  # 0 <= k <= total_count
TRIGAMMA_RTOL = 1e-7  # torch's digamma derivative is off by up to 5e-10 relative (kiln's agrees with mpmath to 2e-16),
# which the entropies and KLs built on digamma amplify where their terms nearly cancel (5e-8 seen in Beta || Gamma)


def _fixed(M, array):
    """A parameter that is not differentiated, as each library takes it (torch's Binomial wants a tensor)."""
    return array if M is kd else require("torch").tensor(array)


UNIT_LOW = RNG.uniform(0.05, 0.4, SHAPE)  # inside [0, 1] (Uniform || Beta finite), except where shifted below
UNIT_HIGH = UNIT_LOW + RNG.uniform(0.1, 0.5, SHAPE)

# name: (fn(M, *params, *data), params (differentiated), data)
CASES = {
    "normal.log_prob": (lambda M, m, s, x: M.Normal(m, s).log_prob(x), [_real(), _positive()], [_real()]),
    "normal.cdf": (lambda M, m, s, x: M.Normal(m, s).cdf(x), [_real(), _positive()], [_real()]),
    "normal.icdf": (lambda M, m, s, p: M.Normal(m, s).icdf(p), [_real(), _positive()], [_probability()]),
    "normal.icdf_tails": (lambda M, m, s, p: M.Normal(m, s).icdf(p), [_real((5,)), _positive((5,))],
                          [np.array([1e-6, 0.001, 0.5, 0.999, 1 - 1e-6])]),
    "normal.entropy": (lambda M, m, s: M.Normal(m, s).entropy(), [_real(), _positive()], []),
    "normal.moments": (lambda M, m, s: M.Normal(m, s).mean + M.Normal(m, s).variance * 3 + M.Normal(m, s).stddev * 5
                       + M.Normal(m, s).mode * 7, [_real(), _positive()], []),
    "normal.broadcast": (lambda M, m, s, x: M.Normal(m, s).log_prob(x), [_real((3, 1)), _positive((4,))], [_real()]),
    "normal.number_scale": (lambda M, m, x: M.Normal(m, 0.7).log_prob(x) + M.Normal(0.5, m.exp()).entropy(), [_real()], [_real()]),
    "uniform.log_prob": (lambda M, lo, hi, x: M.Uniform(lo, hi).log_prob(x), [LOW, HIGH], [INSIDE]),
    "uniform.cdf": (lambda M, lo, hi, x: M.Uniform(lo, hi, validate_args=False).cdf(x), [LOW, HIGH], [AROUND]),
    "uniform.icdf": (lambda M, lo, hi, p: M.Uniform(lo, hi).icdf(p), [LOW, HIGH], [_probability()]),
    "uniform.entropy": (lambda M, lo, hi: M.Uniform(lo, hi).entropy(), [LOW, HIGH], []),
    "uniform.moments": (lambda M, lo, hi: M.Uniform(lo, hi).mean + M.Uniform(lo, hi).variance * 3 + M.Uniform(lo, hi).stddev * 5,
                        [LOW, HIGH], []),
    "laplace.log_prob": (lambda M, m, s, x: M.Laplace(m, s).log_prob(x), [_real(), _positive()], [_real()]),
    "laplace.cdf": (lambda M, m, s, x: M.Laplace(m, s).cdf(x), [_real(), _positive()], [_real()]),
    "laplace.icdf": (lambda M, m, s, p: M.Laplace(m, s).icdf(p), [_real(), _positive()], [_probability()]),
    "laplace.entropy": (lambda M, m, s: M.Laplace(m, s).entropy(), [_real(), _positive()], []),
    "laplace.moments": (lambda M, m, s: M.Laplace(m, s).mean + M.Laplace(m, s).variance * 3 + M.Laplace(m, s).stddev * 5
                        + M.Laplace(m, s).mode * 7, [_real(), _positive()], []),
    "exponential.log_prob": (lambda M, r, x: M.Exponential(r).log_prob(x), [_positive()], [_nonnegative()]),
    "exponential.cdf": (lambda M, r, x: M.Exponential(r).cdf(x), [_positive()], [_nonnegative()]),
    "exponential.icdf": (lambda M, r, p: M.Exponential(r).icdf(p), [_positive()], [_probability()]),
    "exponential.entropy": (lambda M, r: M.Exponential(r).entropy(), [_positive()], []),
    "exponential.moments": (lambda M, r: M.Exponential(r).mean + M.Exponential(r).variance * 3 + M.Exponential(r).stddev * 5,
                            [_positive()], []),
    "bernoulli_probs.log_prob": (lambda M, p, x: M.Bernoulli(probs=p).log_prob(x), [_probability()], [_bits()]),
    "bernoulli_probs.entropy": (lambda M, p: M.Bernoulli(probs=p).entropy(), [_probability()], []),
    "bernoulli_probs.logits": (lambda M, p: M.Bernoulli(probs=p).logits, [_probability()], []),
    "bernoulli_probs.moments": (lambda M, p: M.Bernoulli(probs=p).mean + M.Bernoulli(probs=p).variance * 3, [_probability()], []),
    "bernoulli_logits.log_prob": (lambda M, l, x: M.Bernoulli(logits=l).log_prob(x), [_real()], [_bits()]),
    "bernoulli_logits.entropy": (lambda M, l: M.Bernoulli(logits=l).entropy(), [_real()], []),
    "bernoulli_logits.probs": (lambda M, l: M.Bernoulli(logits=l).probs, [_real()], []),
    "bernoulli_logits.broadcast": (lambda M, l, x: M.Bernoulli(logits=l).log_prob(x), [_real((4,))], [_bits()]),
    "categorical_probs.log_prob": (lambda M, p, k: M.Categorical(probs=p).log_prob(k), [_positive((3, 4))], [_classes()]),
    "categorical_probs.entropy": (lambda M, p: M.Categorical(probs=p).entropy(), [_positive((3, 4))], []),
    "categorical_probs.logits": (lambda M, p: M.Categorical(probs=p).logits, [_positive((3, 4))], []),
    "categorical_logits.log_prob": (lambda M, l, k: M.Categorical(logits=l).log_prob(k), [_real((3, 4))], [_classes()]),
    "categorical_logits.entropy": (lambda M, l: M.Categorical(logits=l).entropy(), [_real((3, 4))], []),
    "categorical_logits.probs": (lambda M, l: M.Categorical(logits=l).probs, [_real((3, 4))], []),
    "categorical_logits.unbatched": (lambda M, l, k: M.Categorical(logits=l).log_prob(k), [_real((4,))], [_classes((6,))]),
    "independent.log_prob": (lambda M, m, s, x: M.Independent(M.Normal(m, s), 1).log_prob(x), [_real(), _positive()], [_real()]),
    "independent.entropy": (lambda M, m, s: M.Independent(M.Normal(m, s), 2).entropy() + M.Independent(M.Normal(m, s), 0).entropy().sum(),
                            [_real(), _positive()], []),
    "gamma.log_prob": (lambda M, a, r, x: M.Gamma(a, r).log_prob(x), [_positive(), _positive()], [_positive()]),
    "gamma.entropy": (lambda M, a, r: M.Gamma(a, r).entropy(), [_positive(), _positive()], [], TRIGAMMA_RTOL),
    "gamma.moments": (lambda M, a, r: M.Gamma(a, r).mean + M.Gamma(a, r).variance * 3 + M.Gamma(a, r).stddev * 5
                      + M.Gamma(a, r).mode * 7, [_positive(), _positive()], []),
    "chi2.log_prob": (lambda M, k, x: M.Chi2(k).log_prob(x) + M.Chi2(k).entropy() + M.Chi2(k).df, [_positive() * 3], [_positive()], TRIGAMMA_RTOL),
    "beta.log_prob": (lambda M, a, b, x: M.Beta(a, b).log_prob(x), [_positive(), _positive()], [_probability()]),
    "beta.entropy": (lambda M, a, b: M.Beta(a, b).entropy(), [_positive(), _positive()], [], TRIGAMMA_RTOL),
    "beta.moments": (lambda M, a, b: M.Beta(a, b).mean + M.Beta(a, b).variance * 3 + M.Beta(a, b).stddev * 5,
                     [_positive(), _positive()], []),
    "poisson.log_prob": (lambda M, r, k: M.Poisson(r).log_prob(k), [_positive() * 4], [COUNTS]),
    "poisson.moments": (lambda M, r: M.Poisson(r).mean + M.Poisson(r).variance * 3 + M.Poisson(r).stddev * 5
                        + M.Poisson(r).mode * 7, [_positive() * 4], []),
    "binomial_probs.log_prob": (lambda M, p, k: M.Binomial(_fixed(M, TRIALS), probs=p).log_prob(k), [_probability()], [COUNTS]),
    "binomial_logits.log_prob": (lambda M, l, k: M.Binomial(_fixed(M, TRIALS), logits=l * 4).log_prob(k), [_real()], [COUNTS]),
    "binomial_logits.probs": (lambda M, l: M.Binomial(_fixed(M, TRIALS), logits=l).probs, [_real()], []),
    "binomial_probs.logits": (lambda M, p: M.Binomial(_fixed(M, TRIALS), probs=p).logits, [_probability()], []),
    "binomial.entropy": (lambda M, p, l: M.Binomial(6, probs=p).entropy() + M.Binomial(_fixed(M, np.full(SHAPE, 3.0)), logits=l).entropy(),
                         [_probability(), _real()], []),
    "binomial.moments": (lambda M, p: M.Binomial(_fixed(M, TRIALS), probs=p).mean + M.Binomial(_fixed(M, TRIALS), probs=p).variance * 3
                         + M.Binomial(_fixed(M, TRIALS), probs=p).stddev * 5 + M.Binomial(_fixed(M, TRIALS), probs=p).mode * 7, [_probability()], []),
}

KL_PAIRS = {
    "normal||normal": (lambda M, a, b, c, d: M.Normal(a, b), lambda M, a, b, c, d: M.Normal(c, d), [_real(), _positive(), _real(), _positive()]),
    "bernoulli||bernoulli": (lambda M, a, b: M.Bernoulli(probs=a), lambda M, a, b: M.Bernoulli(logits=b), [_probability(), _real()]),
    "categorical||categorical": (lambda M, a, b: M.Categorical(logits=a), lambda M, a, b: M.Categorical(probs=b), [_real(), _positive()]),
    "uniform||uniform": (lambda M, a, b, c, d: M.Uniform(a, b), lambda M, a, b, c, d: M.Uniform(c, d),
                         [LOW, HIGH, LOW - RNG.uniform(-0.2, 1, SHAPE), HIGH + RNG.uniform(-0.2, 1, SHAPE)]),  # some inf
    "laplace||laplace": (lambda M, a, b, c, d: M.Laplace(a, b), lambda M, a, b, c, d: M.Laplace(c, d), [_real(), _positive(), _real(), _positive()]),
    "exponential||exponential": (lambda M, a, b: M.Exponential(a), lambda M, a, b: M.Exponential(b), [_positive(), _positive()]),
    "independent||independent": (lambda M, a, b, c, d: M.Independent(M.Normal(a, b), 1), lambda M, a, b, c, d: M.Independent(M.Normal(c, d), 1),
                                 [_real(), _positive(), _real(), _positive()]),
    "exponential||normal": (lambda M, a, b, c: M.Exponential(a), lambda M, a, b, c: M.Normal(b, c), [_positive(), _real(), _positive()]),
    "laplace||normal": (lambda M, a, b, c, d: M.Laplace(a, b), lambda M, a, b, c, d: M.Normal(c, d), [_real(), _positive(), _real(), _positive()]),
    "normal||laplace": (lambda M, a, b, c, d: M.Normal(a, b), lambda M, a, b, c, d: M.Laplace(c, d), [_real(), _positive(), _real(), _positive()]),
    "uniform||normal": (lambda M, a, b, c, d: M.Uniform(a, b), lambda M, a, b, c, d: M.Normal(c, d), [LOW, HIGH, _real(), _positive()]),
    "uniform||exponential": (lambda M, a, b, c: M.Uniform(a, b), lambda M, a, b, c: M.Exponential(c), [LOW + 1, HIGH + 1, _positive()]),
    "normal||uniform": (lambda M, a, b, c, d: M.Normal(a, b), lambda M, a, b, c, d: M.Uniform(c, d), [_real(), _positive(), LOW, HIGH]),
    "normal||exponential": (lambda M, a, b, c: M.Normal(a, b), lambda M, a, b, c: M.Exponential(c), [_real(), _positive(), _positive()]),
    "laplace||exponential": (lambda M, a, b, c: M.Laplace(a, b), lambda M, a, b, c: M.Exponential(c), [_real(), _positive(), _positive()]),
    "laplace||uniform": (lambda M, a, b, c, d: M.Laplace(a, b), lambda M, a, b, c, d: M.Uniform(c, d), [_real(), _positive(), LOW, HIGH]),
    "exponential||uniform": (lambda M, a, b, c: M.Exponential(a), lambda M, a, b, c: M.Uniform(b, c), [_positive(), LOW, HIGH]),
    "gamma||gamma": (lambda M, a, b, c, d: M.Gamma(a, b), lambda M, a, b, c, d: M.Gamma(c, d), [_positive() for _ in range(4)], TRIGAMMA_RTOL),
    "beta||beta": (lambda M, a, b, c, d: M.Beta(a, b), lambda M, a, b, c, d: M.Beta(c, d), [_positive() for _ in range(4)], TRIGAMMA_RTOL),
    "beta||exponential": (lambda M, a, b, c: M.Beta(a, b), lambda M, a, b, c: M.Exponential(c), [_positive() for _ in range(3)], TRIGAMMA_RTOL),
    "beta||gamma": (lambda M, a, b, c, d: M.Beta(a, b), lambda M, a, b, c, d: M.Gamma(c, d), [_positive() for _ in range(4)], TRIGAMMA_RTOL),
    "beta||normal": (lambda M, a, b, c, d: M.Beta(a, b), lambda M, a, b, c, d: M.Normal(c, d), [_positive(), _positive(), _real(), _positive()], TRIGAMMA_RTOL),
    "beta||uniform": (lambda M, a, b, c, d: M.Beta(a, b), lambda M, a, b, c, d: M.Uniform(c, d),  # some inf
                      [_positive(), _positive(), RNG.uniform(-1, 0.2, SHAPE), RNG.uniform(0.8, 2, SHAPE)], TRIGAMMA_RTOL),
    "exponential||gamma": (lambda M, a, b, c: M.Exponential(a), lambda M, a, b, c: M.Gamma(b, c), [_positive() for _ in range(3)]),
    "gamma||exponential": (lambda M, a, b, c: M.Gamma(a, b), lambda M, a, b, c: M.Exponential(c), [_positive() for _ in range(3)], TRIGAMMA_RTOL),
    "gamma||normal": (lambda M, a, b, c, d: M.Gamma(a, b), lambda M, a, b, c, d: M.Normal(c, d), [_positive(), _positive(), _real(), _positive()], TRIGAMMA_RTOL),
    "uniform||beta": (lambda M, a, b, c, d: M.Uniform(a, b), lambda M, a, b, c, d: M.Beta(c, d),  # some inf
                      [UNIT_LOW - RNG.choice([0, 0.5], SHAPE), UNIT_HIGH, _positive(), _positive()]),
    "uniform||gamma": (lambda M, a, b, c, d: M.Uniform(a, b), lambda M, a, b, c, d: M.Gamma(c, d),  # some inf
                       [UNIT_LOW - RNG.choice([0, 0.5], SHAPE), UNIT_HIGH, _positive(), _positive()]),
    "exponential||beta": (lambda M, a, b, c: M.Exponential(a), lambda M, a, b, c: M.Beta(b, c), [_positive() for _ in range(3)]),
    "gamma||beta": (lambda M, a, b, c, d: M.Gamma(a, b), lambda M, a, b, c, d: M.Beta(c, d), [_positive() for _ in range(4)]),
    "gamma||uniform": (lambda M, a, b, c, d: M.Gamma(a, b), lambda M, a, b, c, d: M.Uniform(c, d), [_positive(), _positive(), LOW, HIGH]),
    "laplace||beta": (lambda M, a, b, c, d: M.Laplace(a, b), lambda M, a, b, c, d: M.Beta(c, d), [_real(), _positive(), _positive(), _positive()]),
    "laplace||gamma": (lambda M, a, b, c, d: M.Laplace(a, b), lambda M, a, b, c, d: M.Gamma(c, d), [_real(), _positive(), _positive(), _positive()]),
    "normal||beta": (lambda M, a, b, c, d: M.Normal(a, b), lambda M, a, b, c, d: M.Beta(c, d), [_real(), _positive(), _positive(), _positive()]),
    "normal||gamma": (lambda M, a, b, c, d: M.Normal(a, b), lambda M, a, b, c, d: M.Gamma(c, d), [_real(), _positive(), _positive(), _positive()]),
    "poisson||poisson": (lambda M, a, b: M.Poisson(a), lambda M, a, b: M.Poisson(b), [_positive(), _positive()]),
    "binomial||binomial": (lambda M, a, b: M.Binomial(_fixed(M, TRIALS), probs=a), lambda M, a, b: M.Binomial(_fixed(M, np.minimum(TRIALS, 4)), logits=b),
                           [_probability(), _real()]),  # inf where p has more trials
    "bernoulli||poisson": (lambda M, a, b: M.Bernoulli(probs=a), lambda M, a, b: M.Poisson(b), [_probability(), _positive()]),
    "poisson||bernoulli": (lambda M, a, b: M.Poisson(a), lambda M, a, b: M.Bernoulli(logits=b), [_positive(), _real()]),
    "poisson||binomial": (lambda M, a, b: M.Poisson(a), lambda M, a, b: M.Binomial(_fixed(M, TRIALS), probs=b), [_positive(), _probability()]),
    # torch's digamma derivative (trigamma) is off by up to 5e-10 relative (kiln's agrees with mpmath to 1e-16)
    "dirichlet||dirichlet": (lambda M, a, b: M.Dirichlet(a), lambda M, a, b: M.Dirichlet(b), [_positive(), _positive()], 5e-9),
}


def _kl_case(p, q, params, rtol=1e-10):
    return (lambda M, *a: M.kl_divergence(p(M, *a), q(M, *a)), params, [], rtol)


def check_against_torch(fn, params, data, rtol=1e-10):
    """``fn(kiln.distributions, ...)`` traced and compiled, against ``fn(torch.distributions, ...)``: the values, and
    the gradient of a random weighting of them with respect to each of ``params``."""
    torch = require("torch")
    kiln_fn = lambda *args: fn(kd, *args)  # noqa: E731
    ours = kiln.compile(kiln_fn, batch_dim=None)(*params, *data)
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    theirs = fn(torch.distributions, *tensors, *[torch.tensor(d) for d in data])
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=rtol, atol=1e-13)
    if not theirs.requires_grad:  # a constant (an infinite KL): no slope
        theirs = theirs + 0 * sum(t.sum() for t in tensors)
    weights = RNG.standard_normal(theirs.shape)
    finite = np.isfinite(theirs.detach().numpy())
    weights = np.where(finite, weights, 0.0)  # an infinite KL's slope is 0 * inf
    our_grads = kiln.grad(lambda *args: (kiln_fn(*args) * weights).sum(), argnums=tuple(range(len(params))))(*params, *data)
    our_grads = our_grads if isinstance(our_grads, tuple) else (our_grads,)
    their_grads = torch.autograd.grad((theirs * torch.tensor(weights)).sum(), tensors, allow_unused=True)
    for index, (mine, reference) in enumerate(zip(our_grads, their_grads)):
        expected = np.zeros_like(params[index]) if reference is None else reference.numpy()
        np.testing.assert_allclose(mine, expected, rtol=rtol, atol=1e-12, err_msg=f"gradient w.r.t. parameter {index}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_are_torchs(name):
    check_against_torch(*CASES[name])


@pytest.mark.parametrize("name", sorted(KL_PAIRS))
def test_kl_divergence_and_its_gradients_are_torchs(name):
    check_against_torch(*_kl_case(*KL_PAIRS[name]))


def test_every_pair_torch_registers_among_kilns_families_has_a_rule_and_a_test():
    torch = require("torch")
    from kiln.frontend.distributions_kl import _KL

    families = set(kd.__all__)
    theirs = {(p.__name__, q.__name__) for p, q in torch.distributions.kl._KL_REGISTRY if {p.__name__, q.__name__} <= families}
    ours = {(p.__name__, q.__name__) for p, q in _KL if {p.__name__, q.__name__} <= families}
    assert theirs == ours
    tested = {tuple(name.title() for name in pair.split("||")) for pair in KL_PAIRS} | {("MultivariateNormal", "MultivariateNormal"),
                                                                                      ("TransformedDistribution", "TransformedDistribution")}
    low_rank = "LowRankMultivariateNormal"  # its pairs are tested in test_lowrank_multivariate_normal.py
    tested |= {(low_rank, low_rank), ("MultivariateNormal", low_rank), (low_rank, "MultivariateNormal")}
    tested |= {("OneHotCategorical", "OneHotCategorical")}  # tested in test_one_hot_categorical_vs_torch.py
    tested |= set(importlib.import_module("test_continuous_more_vs_torch").KL_PAIRS)  # keyed by class-name pairs
    tested |= {tuple(pair.split("||")) for pair in importlib.import_module("test_discrete_relaxed_vs_torch").KL_PAIRS}
    tested |= {("ExponentialFamily", "ExponentialFamily")}  # the Bregman rule: test_wishart_lkj_registry_vs_torch.py
    assert tested == ours  # the multivariate pair is tested in test_multivariate_normal.py, the transformed one in
    # test_transformed_distribution_vs_torch.py


def test_uniform_log_prob_is_minus_inf_outside():
    torch = require("torch")
    x = np.array([-3.0, 0.0, 0.999, 1.0, 2.0])
    ours = kiln.compile(lambda v: kd.Uniform(0.0, 1.0).log_prob(v), batch_dim=None)(x)
    expected = torch.distributions.Uniform(0.0, 1.0, validate_args=False).log_prob(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(ours, expected)
    assert np.isneginf(ours[[0, 3, 4]]).all()


def test_discrete_kl_is_infinite_or_zero_at_the_support_edges_as_torchs():
    p = np.array([[0.0, 0.5, 0.5], [0.2, 0.3, 0.5]])
    q = np.array([[0.3, 0.0, 0.7], [0.2, 0.3, 0.5]])
    check_against_torch(lambda M, a, b: M.kl_divergence(M.Categorical(probs=a), M.Categorical(probs=b)), [p, q], [])
    bp, bq = np.array([0.0, 1.0, 0.3, 0.3, 0.0]), np.array([0.5, 0.5, 0.0, 1.0, 0.0])
    check_against_torch(lambda M, a, b: M.kl_divergence(M.Bernoulli(probs=a), M.Bernoulli(probs=b)), [bp, bq], [])


def test_erfinv_is_torchs_across_its_range():
    """``Normal.icdf``'s ``Tensor.erfinv``, over the range ``icdf`` gives it."""
    torch = require("torch")

    def erfinv(t):
        return t.erfinv()

    y = np.concatenate([np.linspace(-0.999999, 0.999999, 2001), [-1.0, 1.0, 0.0, 1e-300, -1.5, 2.0]])
    ours, expected = kiln.compile(erfinv, batch_dim=None)(y), torch.erfinv(torch.tensor(y)).numpy()
    central = np.abs(y) <= 0.99
    np.testing.assert_allclose(ours[central], expected[central], rtol=1e-14, atol=0)
    # near +-1 erfinv's condition number grows as exp(x^2): erf's rounding there (1 ulp of 1) costs ~1e-13 at 0.999999
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=0)
    slope = kiln.grad(lambda t: erfinv(t).sum())(y[:2001])
    np.testing.assert_allclose(slope, np.sqrt(np.pi) / 2 * np.exp(ours[:2001] ** 2), rtol=1e-13)


def test_float32_parameters_compute_in_float32():
    torch = require("torch")
    loc, scale, x = (a.astype(np.float32) for a in (_real(), _positive(), _real()))
    ours = kiln.compile(lambda m, s, v: kd.Normal(m, s).log_prob(v), batch_dim=None)(loc, scale, x)
    assert ours.dtype == np.float32
    expected = torch.distributions.Normal(torch.tensor(loc), torch.tensor(scale)).log_prob(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


def test_shapes_and_properties_are_torchs():
    torch = require("torch")
    cases = [
        (lambda M: M.Normal(np.zeros((3, 1)), np.ones(4)), lambda T: T.Normal(torch.zeros(3, 1), torch.ones(4))),
        (lambda M: M.Categorical(logits=np.zeros((2, 5))), lambda T: T.Categorical(logits=torch.zeros(2, 5))),
        (lambda M: M.Independent(M.Normal(np.zeros((2, 3, 4)), 1.0), 2), lambda T: T.Independent(T.Normal(torch.zeros(2, 3, 4), 1.0), 2)),
        (lambda M: M.Exponential(np.ones(3)).expand((2, 3)), lambda T: T.Exponential(torch.ones(3)).expand((2, 3))),
        (lambda M: M.Independent(M.Laplace(np.zeros((3, 4)), 1.0), 1).expand((5, 3)),
         lambda T: T.Independent(T.Laplace(torch.zeros(3, 4), 1.0), 1).expand((5, 3))),
    ]
    for ours, theirs in cases:
        mine, reference = ours(kd), theirs(torch.distributions)
        assert mine.batch_shape == tuple(reference.batch_shape) and mine.event_shape == tuple(reference.event_shape)
        assert mine.has_rsample == reference.has_rsample and mine.has_enumerate_support == reference.has_enumerate_support
        shape = kiln.trace(lambda: ours(kd).sample((7,))).outputs[0].type.shape
        assert shape == tuple(reference.sample((7,)).shape)


def test_expand_keeps_the_values():
    check_against_torch(lambda M, l, k: M.Categorical(logits=l).expand((5, 3)).log_prob(k), [_real((3, 4))], [_classes()])
    check_against_torch(lambda M, m, x: M.Normal(m, 0.5).expand((2, 3, 4)).log_prob(x), [_real()], [_real((2, 3, 4))])


def test_enumerate_support_is_torchs():
    torch = require("torch")
    for expand in (True, False):
        ours = kiln.compile(lambda l: kd.Categorical(logits=l).enumerate_support(expand), batch_dim=None)(_real((2, 3)))
        np.testing.assert_array_equal(ours, torch.distributions.Categorical(logits=torch.zeros(2, 3)).enumerate_support(expand).numpy())
        ours = kiln.compile(lambda p: kd.Bernoulli(p).enumerate_support(expand), batch_dim=None)(_probability((2,)))
        np.testing.assert_array_equal(ours, torch.distributions.Bernoulli(torch.full((2,), 0.5)).enumerate_support(expand).numpy())


def test_modes_are_torchs():
    torch = require("torch")
    probs = np.array([0.2, 0.5, 0.7])
    ours = kiln.compile(lambda p: kd.Bernoulli(p).mode, batch_dim=None)(probs)
    np.testing.assert_array_equal(ours, torch.distributions.Bernoulli(torch.tensor(probs)).mode.numpy())
    logits = _real((3, 4))
    ours = kiln.compile(lambda l: kd.Categorical(logits=l).mode, batch_dim=None)(logits)
    np.testing.assert_array_equal(ours, torch.distributions.Categorical(logits=torch.tensor(logits)).mode.numpy())
    ours = kiln.compile(lambda l: (kd.Categorical(logits=l).mean, kd.Uniform(l, l + 1).mode), batch_dim=None)(logits)
    assert ours[0].shape == (3,) and np.isnan(ours[0]).all() and np.isnan(ours[1]).all()
