"""``Gamma``, ``Chi2``, ``Beta`` and ``Dirichlet`` draws from the step's seed and their implicit reparameterization
gradient (``frontend/distributions_gamma_sampler.py``): the gradient ``dx/dalpha`` at fixed CDF against mpmath's
derivative of the regularized incomplete gamma function (an exact oracle) and against torch's approximation of it;
``rsample``'s gradients as unbiased estimates of the gradient of an expectation (the analytic one); draws inside a
compiled function with the distribution's moments; a compiled training step fitting a Gamma by ``rsample``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.frontend import distributions_gamma_sampler as sampler
from kiln.frontend.distributions_gamma_sampler import TEMME_FROM, standard_gamma_gradient
from oracles import require

QUANTILES = [1e-9, 1e-6, 0.01, 0.3, 0.5, 0.7, 0.99]
UPPER_TAIL = [1 - 1e-6, 1 - 1e-9]


def _exact_gradient(alpha: float, x: float) -> float:
    """``-(dP/dalpha) / pdf``, with mpmath at 40 digits."""
    mp = require("mpmath")
    with mp.workdps(40):
        a, x = mp.mpf(alpha), mp.mpf(x)
        d_cdf = mp.diff(lambda t: mp.gammainc(t, 0, x, regularized=True), a)
        return float(-d_cdf / (x ** (a - 1) * mp.exp(-x) / mp.gamma(a)))


def _relative_errors(alpha: float, quantiles: list[float]) -> np.ndarray:
    special = require("scipy.special")
    xs = np.maximum([special.gammaincinv(alpha, q) for q in quantiles], 1e-300)
    ours = standard_gamma_gradient(kiln.tensor(np.full(len(xs), alpha)), kiln.tensor(xs)).numpy()
    return np.abs(ours / [_exact_gradient(alpha, x) for x in xs] - 1)


@pytest.mark.parametrize("alpha", [0.01, 0.3, 1.0, 3.0, 8.0, np.nextafter(TEMME_FROM, 0)])
def test_series_gradient_matches_the_exact_one_to_rounding(alpha):
    assert _relative_errors(alpha, QUANTILES).max() < 1e-12
    # the upper tail subtracts terms of the series that grow as 1 / pdf
    assert np.all(_relative_errors(alpha, UPPER_TAIL) < [1e-8, 3e-6])


@pytest.mark.parametrize("alpha, bound", [(TEMME_FROM, 4e-5), (40.0, 5e-6), (128.0, 3e-7), (1000.0, 2e-9),
                                          (1e5, 1e-13)])
def test_temmes_expansion_gradient_is_within_its_bound(alpha, bound):
    """Its error falls as a^-2.5: the next term of Temme's series."""
    assert _relative_errors(alpha, QUANTILES + UPPER_TAIL).max() < bound


def test_temmes_taylor_and_closed_forms_meet_at_the_switch():
    """Either side of ``|x / a - 1| = 0.1`` and at ``x = a``, where the closed forms divide 0 by 0."""
    alpha = 50.0
    xs = alpha * (1 + np.array([-0.1001, -0.0999, 0.0999, 0.1001, 1e-12, 0.0]))
    ours = standard_gamma_gradient(kiln.tensor(np.full(len(xs), alpha)), kiln.tensor(xs)).numpy()
    np.testing.assert_allclose(ours, [_exact_gradient(alpha, x) for x in xs], rtol=2e-6)


def test_taylor_coefficients_are_the_series_of_the_closed_forms():
    sp = require("sympy")
    mu = sp.symbols("mu")
    order = len(sampler.RATIO)
    eta = mu * sp.sqrt(sp.series(2 * (mu - sp.log(1 + mu)) / mu**2, mu, 0, order + 8).removeO())
    eta = sp.series(eta, mu, 0, order + 8).removeO()
    c1 = 1 / eta**3 - 1 / mu**3 - 1 / mu**2 - 1 / (12 * mu)
    for ours, closed in [(sampler.RATIO, mu / eta), (sampler.C1, c1)]:
        series = sp.Poly(sp.series(closed, mu, 0, order).removeO(), mu)
        np.testing.assert_allclose(ours, [float(series.coeff_monomial(mu**k)) for k in range(order)], rtol=1e-15)


def test_gradient_agrees_with_torchs_approximation_of_it():
    torch, special = require("torch"), require("scipy.special")
    alphas = np.repeat([0.05, 0.5, 1.0, 4.0, 20.0, 300.0], 5)
    xs = special.gammaincinv(alphas, np.tile([0.01, 0.3, 0.5, 0.7, 0.99], 6))
    ours = standard_gamma_gradient(kiln.tensor(alphas), kiln.tensor(xs)).numpy()
    theirs = torch._standard_gamma_grad(torch.tensor(alphas), torch.tensor(xs)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=3e-3)  # torch's fit is within 3e-3 of the exact gradient


@pytest.mark.parametrize("upper", [False, True])
def test_incomplete_gamma_is_differentiable_in_a_where_torchs_is_not(float64_default, upper):
    """``dP/da = -pdf dx/da``: kiln.special.gammainc and gammaincc's gradient in ``a`` against mpmath's (torch
    raises "derivative for aten::igamma is not implemented")."""
    mp = require("mpmath")
    a, x = np.array([0.05, 0.5, 3.0, 15.0, 40.0, 900.0]), np.array([0.01, 0.3, 2.0, 25.0, 42.0, 880.0])
    concentration = kiln.tensor(a, requires_grad=True)
    function = kiln.special.gammaincc if upper else kiln.special.gammainc
    function(concentration, kiln.tensor(x)).sum().backward()
    with mp.workdps(40):
        exact = [float(mp.diff(lambda t: mp.gammainc(t, 0, float(xi), regularized=True), float(ai))) for ai, xi in zip(a, x)]
    np.testing.assert_allclose(concentration.grad.numpy(), -np.array(exact) if upper else exact, rtol=5e-5)


def test_gamma_cdf_gradient_in_the_concentration_matches_finite_differences(float64_default):
    def cdf(concentration):
        return kiln.distributions.Gamma(concentration, kiln.tensor([2.0, 0.5, 1.0])).cdf(kiln.tensor([0.4, 5.0, 30.0]))

    concentration = np.array([0.7, 2.5, 28.0])
    ours = kiln.grad(lambda c: cdf(c).sum())(kiln.tensor(concentration)).numpy()
    step = 1e-6 * concentration
    central = [(cdf(kiln.tensor(concentration + step * e)) - cdf(kiln.tensor(concentration - step * e))).numpy()[i]
               / (2 * step[i]) for i, e in enumerate(np.eye(3))]
    np.testing.assert_allclose(ours, central, rtol=4e-5)


def _per_draw(make, parameters: list[np.ndarray], statistic, draws: int = 10000, seed: int = 3):
    """Each draw's gradient of ``statistic(x)`` to each parameter (a batch of ``draws`` copies): mean and standard
    error of the estimate."""
    kiln.manual_seed(seed)
    tensors = [kiln.tensor(np.repeat(p[None], draws, 0), requires_grad=True) for p in parameters]
    statistic(make(*tensors).rsample()).sum().backward()
    grads = [t.grad.numpy() for t in tensors]
    return [(g.mean(0), g.std(0) / np.sqrt(draws)) for g in grads]


def _assert_unbiased(estimates, expected):
    for (mean, error), want in zip(estimates, expected):
        assert np.all(np.abs(mean - want) < 5 * error + 1e-12), (mean, want, error)


def test_gamma_rsample_gradient_estimates_the_expectations_gradient(float64_default):
    alpha, rate = np.array([0.2, 1.0, 3.5, 400.0]), np.array([2.0, 0.5, 1.0, 3.0])
    estimates = _per_draw(kiln.distributions.Gamma, [alpha, rate], lambda x: x * x)
    # E[x^2] = a (a + 1) / r^2
    _assert_unbiased(estimates, [(2 * alpha + 1) / rate**2, -2 * alpha * (alpha + 1) / rate**3])


def test_chi2_rsample_gradient_estimates_the_expectations_gradient(float64_default):
    df = np.array([0.5, 3.0, 30.0])
    (mean, error), = _per_draw(kiln.distributions.Chi2, [df], lambda x: x * x)
    _assert_unbiased([(mean, error)], [2 * df + 2])  # E[x^2] = df (df + 2)


def test_beta_rsample_gradient_estimates_the_expectations_gradient(float64_default):
    a, b = np.array([0.5, 3.0, 20.0]), np.array([2.0, 1.5, 0.3])
    estimates = _per_draw(kiln.distributions.Beta, [a, b], lambda x: x)
    _assert_unbiased(estimates, [b / (a + b) ** 2, -a / (a + b) ** 2])  # E[x] = a / (a + b)


def test_dirichlet_rsample_gradient_estimates_the_expectations_gradient(float64_default):
    concentration = np.array([0.4, 2.0, 5.0])
    weights = np.array([1.0, -2.0, 0.5])
    (mean, error), = _per_draw(kiln.distributions.Dirichlet, [concentration], lambda x: x @ kiln.tensor(weights))
    total = concentration.sum()
    expected = (weights - weights @ concentration / total) / total  # d/da_i of sum_j w_j a_j / a0
    _assert_unbiased([(mean, error)], [expected])


@pytest.mark.parametrize("name", ["Gamma", "Chi2", "Beta", "Dirichlet"])
def test_draws_inside_a_compiled_function_have_the_distributions_moments(float64_default, name):
    torch = require("torch")
    parameters = {"Gamma": ([0.3, 6.0], [1.0, 2.0]), "Chi2": ([3.0, 0.7],), "Beta": ([0.4, 5.0], [2.0, 1.0]),
                  "Dirichlet": ([[0.4, 2.0, 5.0]],)}[name]

    def draw(*tensors):
        return getattr(kiln.distributions, name)(*tensors).sample((20000,))

    compiled = kiln.compile(draw, seed=0)
    values = compiled(*[kiln.tensor(p) for p in parameters]).numpy()
    again = compiled(*[kiln.tensor(p) for p in parameters]).numpy()
    assert not np.array_equal(values, again)  # fresh draws each call, as dropout's
    expected = getattr(torch.distributions, name)(*[torch.tensor(p) for p in parameters])
    mean, variance = expected.mean.numpy(), expected.variance.numpy()
    assert np.all(np.abs(values.mean(0) - mean) < 6 * np.sqrt(variance / 20000))
    np.testing.assert_allclose(values.var(0), variance, rtol=0.08)


def test_a_compiled_training_step_fits_a_gamma_by_rsample():
    """Gradient descent on ``E[(x - 3)^2]`` over ``Gamma(a, 1)``: ``a^2 + a - 6a + 9``, smallest at ``a = 2.5``."""
    class Shape(kiln.nn.Module):
        def __init__(self):
            super().__init__()
            self.log_alpha = kiln.nn.Parameter(kiln.tensor(0.0))

        def forward(self, noise_shape):
            return kiln.distributions.Gamma(self.log_alpha.exp(), 1.0).rsample(noise_shape.shape)

    model = Shape()
    optimizer = kiln.optim.Adam(model.parameters(), lr=0.05)
    step = kiln.compile_train_step(model, lambda draws, target: ((draws - target) ** 2).mean(), optimizer, seed=0)
    batch, target = np.zeros(2048, np.float32), np.full(2048, 3.0, np.float32)
    for _ in range(300):
        step(batch, target)
    assert abs(float(model.log_alpha.exp()) - 2.5) < 0.1


def test_float32_rsample_has_finite_gradients_for_tiny_and_huge_concentrations():
    alpha = kiln.tensor([1e-3, 0.1, 1.0, 1e3, 1e6], requires_grad=True)
    draws = kiln.distributions.Gamma(alpha, 1.0).rsample((1000,))
    draws.sum().backward()
    assert draws.dtype == kiln.float32 and np.all(np.isfinite(draws.numpy())) and np.all(draws.numpy() > 0)
    assert np.all(np.isfinite(alpha.grad.numpy())) and np.all(alpha.grad.numpy() >= 0)


def test_a_censored_gamma_likelihood_fits_the_shape_through_igammac(float64_default):
    """Survival data cut off at 4: observed times score ``log_prob``, censored ones ``log Q(a, 4)``, whose gradient in
    ``a`` torch does not have. Maximum likelihood recovers the shape 3 the data were drawn with."""
    times = np.random.default_rng(0).gamma(3.0, size=4000)
    observed, censored = kiln.tensor(times[times < 4.0]), int((times >= 4.0).sum())
    log_shape = kiln.tensor(0.0, requires_grad=True)
    optimizer = kiln.optim.Adam([log_shape], lr=0.1)
    for _ in range(60):
        optimizer.zero_grad()
        shape = log_shape.exp()
        survival = kiln.special.gammaincc(shape, kiln.tensor(4.0)).log()
        loss = -(kiln.distributions.Gamma(shape, 1.0).log_prob(observed).sum() + censored * survival) / len(times)
        loss.backward()
        optimizer.step()
    assert abs(float(log_shape.exp()) - 3.0) < 0.1
