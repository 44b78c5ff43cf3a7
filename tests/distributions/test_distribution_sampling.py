"""kiln.distributions' draws: a pure function of the step's seed, with torch.distributions' statistics (moments within
a few standard errors, the Kolmogorov-Smirnov distance to torch's cdf below its 0.1% critical value, class
frequencies), no gradient through ``sample``, and ``rsample``'s reparameterization gradient: the pathwise gradient of
``mean(f(x))`` is exactly the mean of the per-draw slopes, which estimates ``d E[f(x)] / d theta`` analytically."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
import kiln.distributions as kd
from kiln.backends.numpy import NumpyBackend
from oracles import require

N = 200_000


def _seeded(fn, *shapes, dtype="float64"):
    """``fn`` traced on inputs of ``shapes``, run as ``run(*arrays, seed)`` (the graph's seed input comes last)."""
    graph = kiln.trace(fn, *[kiln.TensorSpec(shape, dtype) for shape in shapes])
    assert graph.inputs[-1].name_hint == "rng_seed"
    run = NumpyBackend().compile(graph)
    return lambda *arrays, seed: [np.asarray(o) for o in run(*arrays, np.int64(seed))]


def ks_distance(draws: np.ndarray, cdf: np.ndarray) -> float:
    """The Kolmogorov-Smirnov statistic of sorted ``draws`` against the distribution function values ``cdf`` there."""
    n = draws.size
    return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


KS_CRITICAL = 1.95 / math.sqrt(N)
"""The 0.1% critical value of the KS distance for N draws: a true sample exceeds it once in a thousand seeds."""

CONTINUOUS = {
    "normal": (lambda M, a, b: M.Normal(a, b), (0.7, 1.8)),
    "uniform": (lambda M, a, b: M.Uniform(a, b), (-0.5, 2.0)),
    "laplace": (lambda M, a, b: M.Laplace(a, b), (-1.0, 0.6)),
    "exponential": (lambda M, a, b: M.Exponential(a), (1.7, 0.0)),
}


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
@pytest.mark.parametrize("method", ["sample", "rsample"])
def test_continuous_draws_have_torchs_distribution(name, method):
    torch = require("torch")
    make, params = CONTINUOUS[name]
    run = _seeded(lambda a, b: getattr(make(kd, a, b), method)((N,)), (), ())
    draws = np.sort(run(*map(np.float64, params), seed=11)[0])
    reference = make(torch.distributions, *map(torch.tensor, map(np.float64, params)))
    cdf = reference.cdf(torch.tensor(draws)).numpy()
    assert ks_distance(draws, cdf) < KS_CRITICAL
    mean, std = reference.mean.item(), reference.stddev.item()
    assert abs(draws.mean() - mean) < 5 * std / math.sqrt(N)
    fourth = np.mean((draws - mean) ** 4)
    assert abs(draws.var() - std ** 2) < 5 * math.sqrt((fourth - std ** 4) / N)


def test_the_ks_check_has_power():
    """The same check rejects a slightly wrong distribution (loc off by a tenth of a standard deviation)."""
    torch = require("torch")
    draws = np.sort(_seeded(lambda a: kd.Normal(a, 1.0).sample((N,)), ())(np.float64(0.1), seed=11)[0])
    assert ks_distance(draws, torch.distributions.Normal(0.0, 1.0).cdf(torch.tensor(draws)).numpy()) > 2 * KS_CRITICAL


def test_batched_parameters_draw_each_column_from_its_own_distribution():
    loc, scale = np.array([-3.0, 0.0, 5.0]), np.array([0.5, 1.0, 2.0])
    (draws,) = _seeded(lambda m, s: kd.Normal(m, s).sample((N // 10, 2)), (3,), (3,))(loc, scale, seed=2)
    assert draws.shape == (N // 10, 2, 3)
    flat = draws.reshape(-1, 3)
    assert np.all(np.abs(flat.mean(0) - loc) < 5 * scale / math.sqrt(flat.shape[0]))
    assert np.all(np.abs(flat.std(0) / scale - 1) < 0.02)
    assert abs(np.corrcoef(flat[:, 0], flat[:, 1])[0, 1]) < 5 / math.sqrt(flat.shape[0])


def test_bernoulli_draws_are_zeros_and_ones_with_probability_probs():
    probs = np.array([0.0, 0.1, 0.5, 0.93, 1.0])
    for make in (lambda p: kd.Bernoulli(probs=p), lambda p: kd.Bernoulli(logits=(p / (1 - p)).log())):
        (draws,) = _seeded(lambda p: make(p).sample((N,)), (5,))(probs, seed=5)
        assert draws.dtype == np.float64 and set(np.unique(draws)) <= {0.0, 1.0}
        assert np.all(np.abs(draws.mean(0) - probs) <= 5 * np.sqrt(probs * (1 - probs) / N))


@pytest.mark.parametrize("by", ["probs", "logits"])
def test_categorical_draws_each_class_with_its_probability(by):
    probs = np.array([[0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]])
    with np.errstate(divide="ignore"):
        given = probs * 3 if by == "probs" else np.log(probs)  # unnormalized; log(0) = -inf is a class never drawn
    (draws,) = _seeded(lambda p: kd.Categorical(**{by: p}).sample((N,)), (2, 4))(given, seed=9)
    assert draws.shape == (N, 2) and draws.dtype == np.int64
    for row in range(2):
        frequencies = np.bincount(draws[:, row], minlength=4) / N
        assert np.all(np.abs(frequencies - probs[row]) <= 5 * np.sqrt(probs[row] * (1 - probs[row]) / N) + 1e-12)
    assert not (draws[:, 0] == 1).any()


def test_draws_are_a_pure_function_of_the_seed_and_each_draw_is_fresh():
    run = _seeded(lambda m: (kd.Normal(m, 1.0).sample((1000,)), kd.Normal(m, 1.0).sample((1000,))), ())
    first, second = run(np.float64(0), seed=3)
    again, _ = run(np.float64(0), seed=3)
    other, _ = run(np.float64(0), seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second) and not np.array_equal(first, other)


def test_sample_has_no_gradient_and_rsample_has_one():
    loc = np.array([0.5, -0.2])
    for method, expected in (("sample", 0.0), ("rsample", 100.0)):
        (slope,) = _seeded(lambda m: kiln.grad(lambda t: getattr(kd.Normal(t, 1.0), method)((100,)).sum())(m), (2,))(loc, seed=1)
        np.testing.assert_array_equal(slope, expected)


def test_discrete_distributions_have_no_rsample():
    with pytest.raises(NotImplementedError, match="score-function"):
        kiln.trace(lambda p: kd.Bernoulli(p).rsample(), kiln.TensorSpec((2,), "float64"))


# d E[x^2] / d theta, analytically, and each draw's pathwise slope d(x^2)/d theta = 2x dx/dtheta from the draw itself.
REPARAMETERIZED = {
    "normal": (lambda M, a, b: M.Normal(a, b), (0.7, 1.3), lambda a, b: (2 * a, 2 * b),
               lambda x, a, b: (2 * x, 2 * x * (x - a) / b)),
    "uniform": (lambda M, a, b: M.Uniform(a, b), (-0.5, 2.0), lambda a, b: ((2 * a + b) / 3, (a + 2 * b) / 3),
                lambda x, a, b: (2 * x * (b - x) / (b - a), 2 * x * (x - a) / (b - a))),
    "laplace": (lambda M, a, b: M.Laplace(a, b), (-1.0, 0.6), lambda a, b: (2 * a, 4 * b),
                lambda x, a, b: (2 * x, 2 * x * (x - a) / b)),
    "exponential": (lambda M, a, b: M.Exponential(a * b), (1.7, 1.0), lambda a, b: (-4 / (a ** 3 * b ** 2), -4 / (a ** 2 * b ** 3)),
                    lambda x, a, b: (-2 * x * x / a, -2 * x * x / b)),
}


@pytest.mark.parametrize("name", sorted(REPARAMETERIZED))
def test_rsample_gradient_estimates_the_gradient_of_the_expectation(name):
    make, params, analytic, per_draw = REPARAMETERIZED[name]

    def step(a, b):
        drawn = []

        def loss(s, t):
            drawn.append(make(kd, s, t).rsample((N,)))
            return drawn[-1].pow(2).mean()

        slopes = kiln.grad(loss, argnums=(0, 1))(a, b)
        return (drawn[0], *slopes)  # the draws the slopes were taken at, from the same graph

    inner, *slopes = _seeded(step, (), ())(*map(np.float64, params), seed=21)
    per = per_draw(inner, *params)
    for slope, draw_slopes, expected in zip(slopes, per, analytic(*params)):
        np.testing.assert_allclose(slope, draw_slopes.mean(), rtol=1e-10)  # autodiff is the pathwise derivative
        assert abs(slope - expected) < 5 * draw_slopes.std() / math.sqrt(N), (slope, expected)


def test_symbolic_batch_dims_sample_and_score():
    run = _seeded(lambda m: (kd.Normal(m, 1.0).rsample(), kd.Normal(m, 1.0).log_prob(m)), ("N", 3))
    for n in (2, 5):
        draws, scores = run(np.zeros((n, 3)), seed=1)
        assert draws.shape == (n, 3) and scores.shape == (n, 3)
        np.testing.assert_allclose(scores, -0.5 * math.log(2 * math.pi))
    score = kiln.compile(lambda l, k: kd.Categorical(logits=l).log_prob(k))
    for n in (3, 6):
        logits, classes = np.random.default_rng(n).standard_normal((n, 4)), np.arange(n) % 4
        expected = logits[np.arange(n), classes] - np.log(np.exp(logits).sum(1))
        np.testing.assert_allclose(score(logits, classes), expected, rtol=1e-12)
