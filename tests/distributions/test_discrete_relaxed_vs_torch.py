"""``Geometric``, ``NegativeBinomial``, ``Multinomial``, ``RelaxedBernoulli``, ``RelaxedOneHotCategorical``,
``ContinuousBernoulli`` and ``VonMises`` against torch.distributions in float64: log_prob, cdf/icdf, entropy, the
moments and the KL rules torch registers with them, values and gradients with respect to every parameter at rtol 1e-10
(``check_against_torch``: traced, compiled and ``kiln.grad``); draws with torch's moments, repeated under the seed;
the relaxed draws' reparameterization gradients; the refusals torch makes (``validate_args``) and the one kiln adds
(an eager-only sampler inside a compiled function)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
import kiln.distributions as kd
from kiln.compiler.errors import TraceError
from oracles import libraries, require
from test_distributions_vs_torch import (TRIGAMMA_RTOL, _fixed, _positive, _probability, _real,
                                        check_against_torch)

RNG = np.random.default_rng(7)
SHAPE = (3, 4)
NEW_FAMILIES = {"Geometric", "NegativeBinomial", "Multinomial", "RelaxedBernoulli", "RelaxedOneHotCategorical",
                "ContinuousBernoulli", "VonMises"}


def _counts(shape=SHAPE, high=9):
    return RNG.integers(0, high, shape).astype(np.float64)


def _unit(shape=SHAPE):
    return RNG.uniform(0.02, 0.98, shape)


def _moments(distribution, mode=False):
    """One weighted sum of the moments (and the mode), so each is compared, value and gradient."""
    moments = distribution.mean + distribution.variance * 3 + distribution.stddev * 5
    return moments + distribution.mode * 7 if mode else moments


MULTINOMIAL_COUNTS = RNG.multinomial(10, [0.1, 0.2, 0.3, 0.4], size=(5, 3)).astype(np.float64)  # (5, 3, 4), sum 10
SIMPLEX_POINTS = RNG.dirichlet(np.ones(4), size=(5, 3))  # (5, 3, 4) on the simplex
CB_PROBS = np.array([[0.02, 0.2, 0.45, 0.4989], [0.4991, 0.4995, 0.5, 0.5005], [0.5009, 0.5011, 0.7, 0.97]])
# ContinuousBernoulli's probs on both sides of lims = (0.499, 0.501) and inside them (the Taylor branch)
CB_WELL_CONDITIONED = np.array([[0.02, 0.2, 0.3, 0.4], [0.4992, 0.4995, 0.5, 0.5008], [0.6, 0.65, 0.8, 0.97]])
NEAR_LIMS_RTOL = 1e-5  # just outside lims (0.4989, 0.5011) the closed-form mean and variance are differences of terms
# near 250 and 6e4 whose sums are 1/2 and 1/12: mpmath puts torch's and kiln's d variance / d probs there both 1% from
# the exact derivative, and their rounding noise differs by up to 1e-6 relative. So what uses the mean or the variance
# (moments, entropy, KL from a ContinuousBernoulli), and cdf and icdf (c^x (1 - c)^(1 - x) + c - 1 cancels likewise),
# are compared at rtol 1e-10 on CB_WELL_CONDITIONED (outside lims at least 0.1 from 1/2: at 0.48 the cancellation
# still costs 1.5e-10), and at NEAR_LIMS_RTOL on CB_PROBS.
TEMPERATURE = np.float64(0.7)

# name: (fn(M, *params, *data), params (differentiated), data[, rtol])
CASES = {
    "geometric_probs.log_prob": (lambda M, p, k: M.Geometric(probs=p).log_prob(k), [_probability()], [_counts()]),
    "geometric_logits.log_prob": (lambda M, l, k: M.Geometric(logits=l).log_prob(k), [_real()], [_counts()]),
    "geometric_probs.entropy": (lambda M, p: M.Geometric(probs=p).entropy(), [_probability()], []),
    "geometric_logits.entropy": (lambda M, l: M.Geometric(logits=l).entropy(), [_real()], []),
    "geometric.moments": (lambda M, p: _moments(M.Geometric(probs=p), mode=True), [_probability()], []),
    "geometric.probs_logits": (lambda M, p, l: M.Geometric(probs=p).logits + M.Geometric(logits=l).probs * 3,
                               [_probability(), _real()], []),
    "geometric.certain_success": (lambda M, p, k: M.Geometric(probs=p).log_prob(k), [np.array([1.0, 1.0, 0.5])],
                                  [np.array([0.0, 0.0, 3.0])]),  # 0 log 0 is 0 at p = 1, k = 0
    "geometric.broadcast": (lambda M, p, k: M.Geometric(probs=p).log_prob(k), [_probability((4,))], [_counts((2, 3, 4))]),
    "negative_binomial_probs.log_prob": (lambda M, n, p, k: M.NegativeBinomial(n, probs=p).log_prob(k),
                                         [_positive() * 3, _probability()], [_counts()]),
    "negative_binomial_logits.log_prob": (lambda M, n, l, k: M.NegativeBinomial(n, logits=l).log_prob(k),
                                          [_positive() * 3, _real()], [_counts()]),
    "negative_binomial.zero_count": (lambda M, p, k: M.NegativeBinomial(_fixed(M, np.array([0.0, 0.0, 2.0])), probs=p).log_prob(k),
                                     [_probability((3,))], [np.array([0.0, 0.0, 1.0])]),  # n = k = 0: probability 1
    "negative_binomial.moments": (lambda M, n, p: _moments(M.NegativeBinomial(n, probs=p), mode=True),
                                  [_positive() * 3, _probability()], []),
    "negative_binomial.probs_logits": (lambda M, n, p, l: M.NegativeBinomial(n, probs=p).logits
                                       + M.NegativeBinomial(n, logits=l).probs, [_positive(), _probability(), _real()], []),
    "multinomial_probs.log_prob": (lambda M, p, x: M.Multinomial(10, probs=p).log_prob(x), [_positive()], [MULTINOMIAL_COUNTS]),
    "multinomial_logits.log_prob": (lambda M, l, x: M.Multinomial(10, logits=l).log_prob(x), [_real()], [MULTINOMIAL_COUNTS]),
    "multinomial.any_total_log_prob": (lambda M, l, x: M.Multinomial(logits=l, validate_args=False).log_prob(x), [_real()],
                                       [MULTINOMIAL_COUNTS[0]]),  # the support is sum <= total_count (1 by default)
    "multinomial.impossible_class": (lambda M, l, x: M.Multinomial(4, logits=l).log_prob(x),
                                     [np.array([[0.5, -np.inf, 1.0], [0.2, 0.3, -1.0]])],
                                     [np.array([[2.0, 0.0, 2.0], [1.0, 1.0, 2.0]])]),  # x l is 0 where x = 0, l = -inf
    "multinomial.moments": (lambda M, p: _moments(M.Multinomial(7, probs=p)), [_positive()], []),
    "multinomial.probs_logits": (lambda M, p, l: M.Multinomial(7, probs=p).logits + M.Multinomial(7, logits=l).probs,
                                 [_positive(), _real()], []),
    "relaxed_bernoulli_probs.log_prob": (lambda M, t, p, x: M.RelaxedBernoulli(t, probs=p).log_prob(x),
                                         [TEMPERATURE, _probability()], [_unit()]),
    "relaxed_bernoulli_logits.log_prob": (lambda M, t, l, x: M.RelaxedBernoulli(t, logits=l).log_prob(x),
                                          [_positive((4,)), _real()], [_unit((2, 3, 4))]),
    "relaxed_bernoulli.probs_logits": (lambda M, t, p, l: M.RelaxedBernoulli(t, probs=p).logits + M.RelaxedBernoulli(t, logits=l).probs
                                       + M.RelaxedBernoulli(t, logits=l).temperature,
                                       [TEMPERATURE, _probability(), _real()], []),
    "logit_relaxed_bernoulli.log_prob": (lambda M, t, l, x: M.relaxed_bernoulli.LogitRelaxedBernoulli(t, logits=l).log_prob(x),
                                         [TEMPERATURE, _real()], [_real() * 2]),
    "relaxed_one_hot_probs.log_prob": (lambda M, t, p, x: M.RelaxedOneHotCategorical(t, probs=p).log_prob(x),
                                       [TEMPERATURE, _positive()], [SIMPLEX_POINTS]),
    "relaxed_one_hot_logits.log_prob": (lambda M, t, l, x: M.RelaxedOneHotCategorical(t, logits=l).log_prob(x),
                                        [np.float64(2.3), _real()], [SIMPLEX_POINTS[0]]),
    "relaxed_one_hot.probs_logits": (lambda M, t, p: M.RelaxedOneHotCategorical(t, probs=p).logits
                                     * M.RelaxedOneHotCategorical(t, probs=p).probs, [TEMPERATURE, _positive()], []),
    "exp_relaxed_categorical.log_prob": (lambda M, t, l, x: M.relaxed_categorical.ExpRelaxedCategorical(t, logits=l).log_prob(x),
                                         [TEMPERATURE, _real()], [np.log(SIMPLEX_POINTS)]),
    "continuous_bernoulli_probs.log_prob": (lambda M, p, x: M.ContinuousBernoulli(probs=p).log_prob(x), [CB_PROBS], [_unit()]),
    "continuous_bernoulli_logits.log_prob": (lambda M, l, x: M.ContinuousBernoulli(logits=l).log_prob(x), [_real() * 3], [_unit()]),
    "continuous_bernoulli.cdf": (lambda M, p, x: M.ContinuousBernoulli(probs=p).cdf(x), [CB_WELL_CONDITIONED], [_unit()]),
    "continuous_bernoulli.cdf_edges": (lambda M, p, x: M.ContinuousBernoulli(probs=p).cdf(x), [CB_PROBS[:, :3]],
                                       [np.array([0.0, 1.0, 0.5])]),
    "continuous_bernoulli.icdf": (lambda M, p, u: M.ContinuousBernoulli(probs=p).icdf(u), [CB_WELL_CONDITIONED], [_unit()]),
    "continuous_bernoulli.entropy": (lambda M, p: M.ContinuousBernoulli(probs=p).entropy(), [CB_WELL_CONDITIONED], []),
    "continuous_bernoulli.moments": (lambda M, p: _moments(M.ContinuousBernoulli(probs=p)), [CB_WELL_CONDITIONED], []),
    "continuous_bernoulli.near_lims": (lambda M, p, x: _moments(M.ContinuousBernoulli(probs=p)) + M.ContinuousBernoulli(probs=p).entropy()
                                       + M.ContinuousBernoulli(probs=p).cdf(x) + M.ContinuousBernoulli(probs=p).icdf(x),
                                       [CB_PROBS], [_unit()], NEAR_LIMS_RTOL),
    "continuous_bernoulli.lims": (lambda M, l, x: M.ContinuousBernoulli(logits=l, lims=(0.4, 0.6)).log_prob(x)
                                  + M.ContinuousBernoulli(logits=l, lims=(0.4, 0.6)).mean, [_real() * 0.6], [_unit()]),
    "continuous_bernoulli.probs_logits": (lambda M, p, l: M.ContinuousBernoulli(probs=p).logits
                                          + M.ContinuousBernoulli(logits=l).probs, [CB_PROBS, _real()], []),
    "von_mises.log_prob": (lambda M, m, k, x: M.VonMises(m, k).log_prob(x), [_real(), RNG.uniform(0.1, 8.0, SHAPE)], [_real() * 3]),
    "von_mises.moments": (lambda M, m, k: _moments(M.VonMises(m, k), mode=True), [_real(), RNG.uniform(0.1, 8.0, SHAPE)], []),
}

KL_PAIRS = {
    "Geometric||Geometric": (lambda M, a, b: M.Geometric(probs=a), lambda M, a, b: M.Geometric(logits=b), [_probability(), _real()]),
    "ContinuousBernoulli||ContinuousBernoulli": (lambda M, a, b: M.ContinuousBernoulli(probs=a),
                                                 lambda M, a, b: M.ContinuousBernoulli(logits=b), [CB_WELL_CONDITIONED, _real()]),
    "ContinuousBernoulli||Exponential": (lambda M, a, b: M.ContinuousBernoulli(probs=a), lambda M, a, b: M.Exponential(b),
                                         [CB_WELL_CONDITIONED, _positive()]),
    "ContinuousBernoulli||Normal": (lambda M, a, b, c: M.ContinuousBernoulli(logits=a), lambda M, a, b, c: M.Normal(b, c),
                                    [_real(), _real(), _positive()]),
    "ContinuousBernoulli||Uniform": (lambda M, a, b, c: M.ContinuousBernoulli(probs=a), lambda M, a, b, c: M.Uniform(b, c),
                                     [CB_WELL_CONDITIONED, RNG.uniform(-1, 0.3, SHAPE), RNG.uniform(0.7, 2, SHAPE)]),  # some inf
    "Beta||ContinuousBernoulli": (lambda M, a, b, c: M.Beta(a, b), lambda M, a, b, c: M.ContinuousBernoulli(probs=c),
                                  [_positive(), _positive(), CB_PROBS], TRIGAMMA_RTOL),
    "Uniform||ContinuousBernoulli": (lambda M, a, b, c: M.Uniform(a, b), lambda M, a, b, c: M.ContinuousBernoulli(logits=c),
                                     [RNG.uniform(-0.3, 0.4, SHAPE), RNG.uniform(0.6, 1.3, SHAPE), _real()]),  # some inf
    "Exponential||ContinuousBernoulli": (lambda M, a, b: M.Exponential(a), lambda M, a, b: M.ContinuousBernoulli(probs=b),
                                         [_positive(), CB_PROBS]),
    "Gamma||ContinuousBernoulli": (lambda M, a, b, c: M.Gamma(a, b), lambda M, a, b, c: M.ContinuousBernoulli(probs=c),
                                   [_positive(), _positive(), CB_PROBS]),
    "Laplace||ContinuousBernoulli": (lambda M, a, b, c: M.Laplace(a, b), lambda M, a, b, c: M.ContinuousBernoulli(logits=c),
                                     [_real(), _positive(), _real()]),
    "Normal||ContinuousBernoulli": (lambda M, a, b, c: M.Normal(a, b), lambda M, a, b, c: M.ContinuousBernoulli(probs=c),
                                    [_real(), _positive(), CB_PROBS]),
    "ContinuousBernoulli||Pareto": (lambda M, a, b, c: M.ContinuousBernoulli(probs=a), lambda M, a, b, c: M.Pareto(b, c),
                                    [CB_WELL_CONDITIONED, _positive(), _positive()]),
    "Gumbel||ContinuousBernoulli": (lambda M, a, b, c: M.Gumbel(a, b), lambda M, a, b, c: M.ContinuousBernoulli(logits=c),
                                    [_real(), _positive(), _real()]),
    "Pareto||ContinuousBernoulli": (lambda M, a, b, c: M.Pareto(a, b), lambda M, a, b, c: M.ContinuousBernoulli(probs=c),
                                    [_positive(), _positive(), CB_PROBS]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_are_torchs(name):
    check_against_torch(*CASES[name])


@pytest.mark.parametrize("name", sorted(KL_PAIRS))
def test_kl_divergence_and_its_gradients_are_torchs(name):
    p, q, params, *rtol = KL_PAIRS[name]
    check_against_torch(lambda M, *a: M.kl_divergence(p(M, *a), q(M, *a)), params, [], *rtol)


def test_every_pair_torch_registers_with_these_families_has_a_rule_and_a_test():
    """Among the families kiln has (another's too, added since), each pair torch registers with one of these."""
    torch = require("torch")
    from kiln.frontend.distributions_kl import _KL

    families = set(kd.__all__)

    def with_ours(pairs):
        return {(p.__name__, q.__name__) for p, q in pairs
                if {p.__name__, q.__name__} <= families and {p.__name__, q.__name__} & NEW_FAMILIES}

    theirs = with_ours(torch.distributions.kl._KL_REGISTRY)
    assert with_ours(_KL) == theirs
    assert {tuple(name.split("||")) for name in KL_PAIRS} == theirs


MULTINOMIAL_ENTROPY = {
    "probs": (lambda M, p: M.Multinomial(6, probs=p).entropy(), [_positive()], []),
    "logits": (lambda M, l: M.Multinomial(3, logits=l).entropy(), [_real((2, 5))], []),
}


@pytest.mark.parametrize("name", sorted(MULTINOMIAL_ENTROPY))
def test_multinomial_entropy_is_torchs(float64_default, name):
    """Under torch's float32 default dtype its ``lgamma(torch.tensor(n) + 1)`` (an int64 tensor) computes in float32,
    8e-8 relative from mpmath's entropy; under float64 it is exact, and kiln's is (the check below)."""
    check_against_torch(*MULTINOMIAL_ENTROPY[name])


def test_multinomial_entropy_is_exact():
    import itertools

    mpmath = require("mpmath")
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    entropy = mpmath.mpf(0)
    for counts in (c for c in itertools.product(range(5), repeat=4) if sum(c) == 4):
        log_p = (mpmath.log(mpmath.factorial(4)) - sum(mpmath.log(mpmath.factorial(c)) for c in counts)
                 + sum(c * mpmath.log(mpmath.mpf(p)) for c, p in zip(counts, probs)))
        entropy -= mpmath.exp(log_p) * log_p
    ours = kiln.compile(lambda p: kd.Multinomial(4, probs=p).entropy(), batch_dim=None)(probs)
    np.testing.assert_allclose(ours, float(entropy), rtol=1e-14)


# Draws --------------------------------------------------------------------------------------------------------------

DRAWS = 20000


def _family(torch, name):
    """Each family with a small batch, parameters covering small and large means, as ``torch`` (kiln or torch) takes them."""
    d, tensor = torch.distributions, torch.tensor
    return {
        "geometric": lambda: d.Geometric(probs=tensor([0.15, 0.9])),
        "geometric_logits": lambda: d.Geometric(logits=tensor([-1.5, 2.0])),
        "negative_binomial": lambda: d.NegativeBinomial(tensor([3.0, 0.5]), probs=tensor([0.4, 0.8])),
        "multinomial": lambda: d.Multinomial(12, probs=tensor([[0.2, 0.3, 0.5], [0.05, 0.05, 0.9]])),
        "continuous_bernoulli": lambda: d.ContinuousBernoulli(probs=tensor([0.1, 0.5, 0.8])),
        "relaxed_bernoulli": lambda: d.RelaxedBernoulli(tensor(0.5), probs=tensor([0.2, 0.7])),
        "relaxed_one_hot_categorical": lambda: d.RelaxedOneHotCategorical(tensor(0.5), logits=tensor([[0.0, 1.0, -1.0]])),
        "von_mises": lambda: d.VonMises(tensor([0.5, 3.0]), tensor([0.5, 4.0])),
    }[name]()


TRACED = ["geometric", "geometric_logits", "multinomial", "continuous_bernoulli", "relaxed_bernoulli",
          "relaxed_one_hot_categorical"]
EAGER_ONLY = ["negative_binomial", "von_mises"]
RELAXED = {"relaxed_bernoulli", "relaxed_one_hot_categorical"}  # torch has no mean or variance: its draws are the reference


def _assert_torchs_moments(name, values, torch):
    expected = _family(torch, name)
    if name in RELAXED:
        reference = expected.sample((DRAWS,)).numpy()
        mean, variance = reference.mean(0), reference.var(0)
        error = np.sqrt((values.var(0) + variance) / DRAWS)
    else:
        mean, variance = expected.mean.numpy(), expected.variance.numpy()
        error = np.sqrt(variance / DRAWS)
    assert np.all(np.abs(values.mean(0) - mean) < 6 * error), (values.mean(0), mean)
    np.testing.assert_allclose(values.var(0), variance, rtol=0.08)


@pytest.mark.parametrize("name", TRACED + ["negative_binomial"])
def test_draws_have_torchs_moments_and_repeat_under_the_seed(float64_default, name):
    kiln.manual_seed(5)
    draws = _family(kiln, name).sample((DRAWS,))
    kiln.manual_seed(5)
    again = _family(kiln, name).sample(kiln.Size([DRAWS]))
    torch = float64_default
    assert tuple(draws.shape) == (DRAWS,) + tuple(_family(torch, name).sample().shape)
    assert draws.dtype == kiln.float64 and not draws.requires_grad
    values = draws.numpy()
    np.testing.assert_array_equal(values, again.numpy())
    _assert_torchs_moments(name, values, torch)
    support = _family(kiln, name).support
    assert np.all(support.check(values))


@pytest.mark.parametrize("name", TRACED)
def test_traced_draws_inside_a_compiled_function(float64_default, name):
    """A compiled function draws from its seed: the same numbers from a fresh compile, fresh ones each call."""
    def draw(ignored):
        return _family(kiln, name).sample((DRAWS,))

    first = kiln.compile(draw, seed=0)
    values, fresh = first(kiln.zeros(1)).numpy(), first(kiln.zeros(1)).numpy()
    np.testing.assert_array_equal(values, kiln.compile(draw, seed=0)(kiln.zeros(1)).numpy())
    assert not np.array_equal(values, fresh)
    _assert_torchs_moments(name, values, float64_default)


def test_von_mises_draws_have_torchs_circular_mean_and_variance(float64_default):
    torch = float64_default
    kiln.manual_seed(3)
    values = _family(kiln, "von_mises").sample((DRAWS,)).numpy()
    kiln.manual_seed(3)
    np.testing.assert_array_equal(values, _family(kiln, "von_mises").sample((DRAWS,)).numpy())
    assert values.shape == (DRAWS, 2) and np.all(np.abs(values) <= math.pi)
    expected = _family(torch, "von_mises")
    resultant = np.exp(1j * values).mean(0)
    np.testing.assert_allclose(np.angle(resultant), expected.mean.numpy(), atol=0.05)
    np.testing.assert_allclose(1 - np.abs(resultant), expected.variance.numpy(), atol=0.01)


@pytest.mark.parametrize("name", EAGER_ONLY)
def test_eager_only_samplers_inside_a_compiled_function_say_what_to_do(name):
    def draw(ignored):
        return _family(kiln, name).sample((3,))

    with pytest.raises(TraceError, match="draw it outside the compiled function") as error:
        kiln.compile(draw, fullgraph=True)(kiln.ones(2))
    assert "test_discrete_relaxed_vs_torch.py" in str(error.value)


def test_geometric_and_multinomial_draws_are_counts():
    geometric = kd.Geometric(probs=np.array([1.0, 0.3])).sample((500,)).numpy()
    assert np.all(geometric[:, 0] == 0) and np.all(geometric == np.floor(geometric)) and geometric.min() >= 0
    counts = kd.Multinomial(7, logits=np.array([0.0, -np.inf, 1.0])).sample((500, 2)).numpy()
    assert counts.shape == (500, 2, 3) and np.all(counts.sum(-1) == 7) and np.all(counts[..., 1] == 0)


# Reparameterized draws ----------------------------------------------------------------------------------------------


def test_relaxed_one_hot_rsample_lies_on_the_simplex_and_its_gradients_flow(float64_default):
    """``y = softmax((l + g) / t)``: ``dy/dl = (diag y - y y^T) / t`` and ``dy/dt = -(diag y - y y^T) log y / t`` (the
    softmax's Jacobian times ``ds/dt = -s / t``, ``s = log y`` up to a constant it annihilates), draw by draw."""
    logits = kiln.tensor([[0.5, -1.0, 0.2, 2.0], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    temperature = kiln.tensor(0.6, requires_grad=True)
    weights = RNG.standard_normal(4)
    draws = kd.RelaxedOneHotCategorical(temperature, logits=logits).rsample((2000,))
    (draws * kiln.tensor(weights)).sum().backward()
    y = draws.detach().numpy()
    assert y.shape == (2000, 2, 4) and np.all(y > 0) and np.allclose(y.sum(-1), 1, rtol=0, atol=1e-12)
    contracted = y * weights - y * (y @ weights)[..., None]  # (diag y - y y^T) w, per draw
    np.testing.assert_allclose(logits.grad.numpy(), contracted.sum(0) / 0.6, rtol=1e-9)
    np.testing.assert_allclose(temperature.grad.numpy(), -(contracted * np.log(y)).sum() / 0.6, rtol=1e-9)


def test_a_compiled_training_step_learns_through_gumbel_softmax_draws():
    """Minimizing the expected cost ``E[y . c]`` of relaxed one-hot draws moves the probability to the cheapest class:
    the rsample gradient flows in a compiled training step (a Gumbel-softmax VAE's encoder gets its gradient so)."""
    class Policy(kiln.nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = kiln.nn.Parameter(kiln.zeros(4))

        def forward(self, noise_shape):
            return kd.RelaxedOneHotCategorical(0.5, logits=self.logits).rsample(noise_shape.shape[:1])

    model = Policy()
    optimizer = kiln.optim.Adam(model.parameters(), lr=0.05)
    step = kiln.compile_train_step(model, lambda draws, cost: (draws * cost).sum(-1).mean(), optimizer, seed=0)
    noise_shape, cost = np.zeros(256, np.float32), np.tile(np.array([1.0, 0.2, 0.7, 0.5], np.float32), (256, 1))
    for _ in range(150):
        step(noise_shape, cost)
    probs = np.exp(model.logits.numpy()) / np.exp(model.logits.numpy()).sum()
    assert probs.argmax() == 1 and probs[1] > 0.9


def test_relaxed_bernoulli_rsample_gradients_flow(float64_default):
    """``y = sigmoid((logit u + l) / t)``: ``dy/dl = y (1 - y) / t`` and ``dy/dt = -y (1 - y) logit(y) / t``."""
    logits = kiln.tensor([-1.0, 0.3, 2.5], requires_grad=True)
    temperature = kiln.tensor(0.4, requires_grad=True)
    draws = kd.RelaxedBernoulli(temperature, logits=logits).rsample((3000,))
    draws.sum().backward()
    y = draws.detach().numpy()
    assert np.all((y > 0) & (y < 1))
    slope = y * (1 - y)
    np.testing.assert_allclose(logits.grad.numpy(), slope.sum(0) / 0.4, rtol=1e-9)
    np.testing.assert_allclose(temperature.grad.numpy(), -(slope * np.log(y / (1 - y))).sum() / 0.4, rtol=1e-7)


def test_continuous_bernoulli_rsample_gradient_is_torchs_icdf_gradient(float64_default):
    """A draw is ``icdf(u)``: its slope in ``probs`` is torch's ``icdf`` slope at the ``u = cdf(draw)`` it came from."""
    torch = float64_default
    probs = np.array([0.05, 0.3, 0.45, 0.7, 0.95])
    ours = kiln.tensor(probs, requires_grad=True)
    draws = kd.ContinuousBernoulli(probs=ours).rsample((400,))
    draws.sum().backward()
    theirs = torch.tensor(probs, requires_grad=True)
    uniform = torch.distributions.ContinuousBernoulli(probs=torch.tensor(probs)).cdf(torch.tensor(draws.detach().numpy()))
    torch.distributions.ContinuousBernoulli(probs=theirs).icdf(uniform).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-8)


# Shapes, capabilities, refusals -------------------------------------------------------------------------------------


def _shaped(torch):
    d, zeros, full = torch.distributions, torch.zeros, torch.full
    return [d.Geometric(probs=full((2, 3), 0.5)), d.NegativeBinomial(torch.ones(3), logits=zeros(2, 1)),
            d.Multinomial(4, logits=zeros(2, 3, 5)), d.RelaxedBernoulli(torch.tensor(0.5), logits=zeros(3)),
            d.RelaxedOneHotCategorical(torch.tensor(0.5), probs=full((2, 4), 0.25)),
            d.ContinuousBernoulli(logits=zeros(2, 3)), d.VonMises(zeros(3, 1), torch.ones(4)),
            d.relaxed_bernoulli.LogitRelaxedBernoulli(torch.tensor(0.5), probs=full((3,), 0.5)),
            d.relaxed_categorical.ExpRelaxedCategorical(torch.tensor(0.5), logits=zeros(3, 2))]


def test_shapes_capabilities_and_expand_as_torch(float64_default):
    def describe(torch):
        return [(type(f).__name__, f.has_rsample, f.has_enumerate_support, tuple(f.batch_shape), tuple(f.event_shape),
                 tuple(f.sample((7,)).shape), tuple(f.expand((5,) + tuple(f.batch_shape)).sample().shape),
                 tuple(f.expand((5,) + tuple(f.batch_shape)).batch_shape)) for f in _shaped(torch)]

    assert describe(kiln) == describe(float64_default)


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_multinomial_has_no_enumerate_support_and_one_total_count_as_torch(name):
    torch = libraries(name)[0]
    multinomial = torch.distributions.Multinomial(3, probs=torch.tensor([0.5, 0.5]))
    assert not multinomial.has_enumerate_support
    with pytest.raises(NotImplementedError):
        multinomial.enumerate_support()
    with pytest.raises(NotImplementedError):
        torch.distributions.Multinomial(torch.tensor([3.0, 4.0]), probs=torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("name", ["kiln", "torch"])
@pytest.mark.parametrize("method", ["mean", "mode", "variance", "entropy", "enumerate_support"])
def test_the_moments_torch_lacks_are_missing_in_kiln_too(name, method):
    """Which of mode, entropy, ... exist per family is torch's (NotImplementedError where it has none)."""
    torch = libraries(name)[0]
    outcomes = []
    for family in _shaped(torch):
        try:
            value = getattr(family, method)
            value() if callable(value) else value
            outcomes.append(True)
        except NotImplementedError:
            outcomes.append(False)
    expected = {"mean": [True, True, True, False, False, True, True, False, False],
                "mode": [True, True, False, False, False, False, True, False, False],
                "variance": [True, True, True, False, False, True, True, False, False],
                "entropy": [True, False, True, False, False, True, False, False, False],
                "enumerate_support": [False] * 9}[method]
    assert outcomes == expected


@pytest.mark.parametrize("name", ["kiln", "torch"])
@pytest.mark.parametrize("make", [
    lambda t: t.distributions.Geometric(probs=t.tensor([0.5, 0.0])),
    lambda t: t.distributions.Geometric(probs=t.tensor(1.5)),
    lambda t: t.distributions.Geometric(probs=t.tensor(0.5), logits=t.tensor(0.0)),
    lambda t: t.distributions.Geometric(probs=t.tensor(0.5)).log_prob(t.tensor(1.5)),
    lambda t: t.distributions.NegativeBinomial(t.tensor(-1.0), probs=t.tensor(0.5)),
    lambda t: t.distributions.NegativeBinomial(t.tensor(2.0), probs=t.tensor(1.0)),
    lambda t: t.distributions.NegativeBinomial(t.tensor(2.0), logits=t.tensor(0.0)).log_prob(t.tensor(-1.0)),
    lambda t: t.distributions.Multinomial(3, probs=t.tensor([-0.5, 1.5])),
    lambda t: t.distributions.Multinomial(3, probs=t.tensor([0.5, 0.5])).log_prob(t.tensor([2.0, 2.0])),
    lambda t: t.distributions.Multinomial(3, probs=t.tensor([0.5, 0.5])).log_prob(t.tensor([4.0, -1.0])),
    lambda t: t.distributions.RelaxedBernoulli(t.tensor(0.5), probs=t.tensor(1.5)),
    lambda t: t.distributions.RelaxedBernoulli(t.tensor(0.5), probs=t.tensor(0.5)).log_prob(t.tensor(1.5)),
    lambda t: t.distributions.RelaxedOneHotCategorical(t.tensor(0.5), probs=t.tensor([-1.0, 2.0])),
    lambda t: t.distributions.RelaxedOneHotCategorical(t.tensor(0.5), logits=t.tensor([0.0, 1.0])).log_prob(t.tensor([0.5, 0.6])),
    lambda t: t.distributions.ContinuousBernoulli(probs=t.tensor(1.5), validate_args=True),
    lambda t: t.distributions.ContinuousBernoulli(logits=t.tensor(0.5)).log_prob(t.tensor(1.5)),
    lambda t: t.distributions.VonMises(t.tensor(0.0), t.tensor(-1.0)),
    lambda t: t.distributions.VonMises(t.tensor(0.0), t.tensor(1.0)).log_prob(t.tensor(float("nan"))),
], ids=["geometric zero probs", "geometric probs above 1", "geometric probs and logits", "geometric fractional value",
        "negative total_count", "negative binomial probs 1", "negative binomial negative value", "multinomial negative probs",
        "multinomial counts above total", "multinomial negative count", "relaxed bernoulli probs above 1",
        "relaxed bernoulli value above 1", "relaxed one hot negative probs", "relaxed one hot value off the simplex",
        "continuous bernoulli probs above 1", "continuous bernoulli value above 1", "von mises negative concentration",
        "von mises nan value"])
def test_bad_parameters_and_values_are_refused_as_torch(name, make):
    torch = libraries(name)[0]
    with pytest.raises(ValueError):
        make(torch)


def test_validate_args_false_skips_the_checks():
    assert kd.Geometric(probs=np.array([0.0, 0.5]), validate_args=False).batch_shape == (2,)
    assert kd.ContinuousBernoulli(probs=1.5, validate_args=False).batch_shape == ()
    value = kd.Multinomial(2, probs=np.array([0.5, 0.5]), validate_args=False).log_prob(np.array([2.0, 2.0]))
    assert np.isfinite(value.item())


def test_von_mises_log_normalizer_is_torchs_polynomial_within_its_accuracy(float64_default):
    """torch's (Abramowitz and Stegun's) ``log I0`` is 2e-7 from mpmath's; kiln keeps it, so values are torch's."""
    mpmath = require("mpmath")
    concentration = np.array([0.01, 0.5, 2.0, 3.7, 3.8, 10.0, 50.0])
    ours = kiln.compile(lambda k: -kd.VonMises(0.0, k).log_prob(0.0) + k, batch_dim=None)(concentration)
    exact = np.array([float(mpmath.log(2 * mpmath.pi * mpmath.besseli(0, k))) for k in concentration])
    np.testing.assert_allclose(ours, exact, rtol=0, atol=5e-7)
    assert np.max(np.abs(ours - exact)) > 1e-9  # the approximation's, not rounding: kiln did not swap in an exact I0


def test_submodules_are_torchs_names():
    torch = require("torch")
    for name in ("geometric", "negative_binomial", "multinomial", "relaxed_bernoulli", "relaxed_categorical",
                 "continuous_bernoulli", "von_mises"):
        theirs, ours = getattr(torch.distributions, name), getattr(kd, name)
        assert set(ours.__all__) <= set(dir(theirs)), name
