"""Gamma draws inside a traced step, and their reparameterization gradient: what ``Gamma``, ``Chi2``, ``Beta`` and
``Dirichlet`` sample and ``rsample`` with (Beta and Dirichlet normalize independent Gamma draws).

```
draw      Marsaglia and Tsang (2000): d = a - 1/3, v = (1 + z / sqrt(9 d))^3 with z ~ N(0, 1), kept when
          log u < z^2 / 2 + d - d v + d log v (u ~ U[0, 1)); the first of CANDIDATES proposals kept wins
          (each is kept with probability above 0.95, so all eight fail less often than 1e-10); a < 1 draws
          Gamma(a + 1) u^(1 / a)
gradient  implicit reparameterization (Figurnov et al. 2018): x moves with a at a fixed CDF P(a, x), so
          dx/da = -(dP/da)(a, x) / pdf(x; a) = (dQ/da) / pdf, Q = 1 - P, computed in float64:
a < 16    the series P / pdf = sum_n t_n, t_n = x^(n+1) / (a (a + 1) ... (a + n)), which gives
            dx/da = -sum_n t_n (log x - digamma(a + n + 1))                      (SERIES_TERMS terms)
a >= 16   Temme's uniform expansion (DLMF 8.12): Q = erfc(eta sqrt(a/2)) / 2 + phi(eta sqrt a) S / sqrt a,
            S = c0 + c1 / a, lambda = x / a, eta^2 / 2 = lambda - 1 - log lambda (eta's sign lambda - 1),
            c0 = 1 / (lambda - 1) - 1 / eta, c1 = 1 / eta^3 - 1 / (lambda - 1)^3 - 1 / (lambda - 1)^2
            - 1 / (12 (lambda - 1)); differentiated in a at fixed x and divided by the pdf
            (phi(eta sqrt a) / pdf = lambda sqrt(a) Gamma*(a), Stirling's ratio):
            dx/da = lambda Gamma*(a) (-(eta / 2 - (lambda - 1) / eta)(1 + eta S) - S / (2 a) + dS/da)
          within 0.1 of lambda = 1 the quotients cancel, and (lambda - 1) / eta and c1 are their Taylor series
          in lambda - 1 (derived with sympy: tests/distributions/test_gamma_reparameterization.py)
```

Against mpmath's derivative of the regularized incomplete gamma function the gradient is within 1e-12 relative up to
the 0.99 quantile for ``a < 16`` and within 3.2e-5 everywhere for ``a >= 16`` (1e-6 from ``a = 64``); the series loses
digits in the far upper tail (2e-6 at the 1 - 1e-9 quantile, 1e-3 at 1 - 1e-12) where its terms grow as 1 / pdf.
torch's approximation of the same gradient is within 3e-3. The draws are kiln's (from the step's seed, as every
``rsample``), the distribution and the expected gradients torch's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import Dim
from kiln.frontend.distributions import broadcast, constant
from kiln.frontend.grad_mode import is_grad_enabled
from kiln.frontend.tensor import Tensor
from kiln.frontend.tensor_special import _polynomial
from kiln.frontend.torch_functions import where

CANDIDATES = 8
SERIES_TERMS = 128
TEMME_FROM = 16.0
NEAR_MEAN = 0.1  # |lambda - 1| below which Temme's quotients are their Taylor series
# Taylor coefficients in mu = lambda - 1 of (lambda - 1) / eta and of c1 (to mu^13: under 1e-14 for |mu| < 0.1)
RATIO = (1.0, 0.3333333333333333, -0.08333333333333333, 0.04259259259259259, -0.027237654320987653,
         0.01947751322751323, -0.01489620076425632, 0.011915478640015678, -0.009842230520037232,
         0.008328093512180232, -0.007180348385069859, 0.006284419272101214, -0.005568252617885114,
         0.004984445684415658)
C1 = (-0.001851851851851852, -0.003472222222222222, 0.0038029100529100527, -0.003429049088771311,
      0.002988131981187537, -0.0025972581998334313, 0.002270865542818775, -0.002001612631813119,
      0.001778942744616595, -0.0015934139242758903, 0.001437430583748347, -0.001305075568638374,
      0.0011917732719073143, -0.0010939765389837166)
STIRLING = (1.0, 1 / 12, 1 / 288, -139 / 51840, -571 / 2488320)  # Gamma*(a) = sum_k STIRLING[k] / a^k


def standard_gamma(distribution: Any, concentration: Tensor, shape: tuple[Dim, ...]) -> Tensor:
    """Draws of ``Gamma(concentration, 1)`` shaped ``shape`` (``concentration`` broadcast to it), with no gradient,
    from ``distribution``'s uniform and normal draws (the step's seed)."""
    alpha = broadcast(concentration.detach(), shape)
    small = alpha < 1
    d = where(small, alpha + 1, alpha) - 1 / 3
    normal = distribution._standard_normal((CANDIDATES,) + tuple(shape))
    uniform = distribution._uniform((CANDIDATES,) + tuple(shape))
    cube = (1 + normal * (9 * d).rsqrt()) ** 3
    kept = (cube > 0) & (uniform.log() < 0.5 * normal * normal + d - d * cube + d * cube.log())
    draws = d  # the fallback where every proposal fails: near the mode, with probability below 1e-10
    for k in reversed(range(CANDIDATES)):
        draws = where(kept[k], d * cube[k], draws)
    draws = where(small, draws * distribution._uniform(tuple(shape)) ** (1 / alpha), draws)
    return draws.clamp(min=float(np.finfo(draws.dtype.numpy).tiny))


def reparameterized_standard_gamma(distribution: Any, concentration: Tensor, shape: tuple[Dim, ...]) -> Tensor:
    """``standard_gamma``'s draws, whose gradient to ``concentration`` is the implicit reparameterization's."""
    alpha = broadcast(concentration, shape)
    draws = standard_gamma(distribution, alpha, shape)
    if not (alpha.requires_grad and is_grad_enabled()):
        return draws
    slope = standard_gamma_gradient(alpha.detach(), draws).to(draws.dtype)
    return draws + (alpha - alpha.detach()) * slope


def standard_gamma_gradient(alpha: Tensor, x: Tensor) -> Tensor:
    """``dx/dalpha`` at a fixed CDF for ``x`` drawn from ``Gamma(alpha, 1)``, in float64."""
    a, x = alpha.double(), x.double()
    series = _series_gradient(a.clamp(max=TEMME_FROM), x)
    gradient = where(a < TEMME_FROM, series, _temme_gradient(a.clamp(min=TEMME_FROM), x))
    return where(gradient.isfinite(), gradient, 0.0)


def _series_gradient(a: Tensor, x: Tensor) -> Tensor:
    """``-sum_n t_n (log x - digamma(a + n + 1))`` over a trailing axis of terms, scaled by the largest to stay finite."""
    steps = constant(np.arange(SERIES_TERMS), a.dtype)
    shifted = a.unsqueeze(-1) + steps  # a + n
    log_x = x.log().unsqueeze(-1)
    log_terms = (steps + 1) * log_x - shifted.log().cumsum(-1)
    digammas = a.digamma().unsqueeze(-1) + shifted.reciprocal().cumsum(-1)  # digamma(a + n + 1)
    largest = log_terms.amax(-1, keepdim=True)
    weights = (log_terms - largest).exp()
    return -(largest.exp() * (weights * (log_x - digammas)).sum(-1, keepdim=True)).squeeze(-1)


def _temme_gradient(a: Tensor, x: Tensor) -> Tensor:
    lam = x / a
    ratio, c0, c1, d_c0, d_c1 = _temme_coefficients(lam - 1)
    eta = (lam - 1) / ratio
    series = c0 + c1 / a
    d_series = -(lam / a) * (d_c0 + d_c1 / a) - c1 / (a * a)  # dS/da at fixed x: lambda moves as -lambda / a
    stirling = _polynomial(a.reciprocal(), STIRLING[::-1])
    return lam * stirling * (-(eta / 2 - ratio) * (1 + eta * series) - series / (2 * a) + d_series)


def _temme_coefficients(mu: Tensor) -> tuple[Tensor, ...]:
    """``(lambda - 1) / eta``, ``c0``, ``c1`` and the derivatives of ``c0``, ``c1`` to lambda, at ``mu = lambda - 1``:
    closed forms away from ``mu = 0``, Taylor series near it."""
    near = mu.abs() < NEAR_MEAN
    small, far = where(near, mu, 0.0), where(near, NEAR_MEAN, mu)
    eta = far.sign() * (2 * (far - far.log1p())).sqrt()
    d_eta = far / ((1 + far) * eta)
    closed = (far / eta, far.reciprocal() - eta.reciprocal(), eta ** -3 - far ** -3 - far ** -2 - 1 / (12 * far),
              -far ** -2 + d_eta / eta ** 2, -3 * d_eta / eta ** 4 + 3 * far ** -4 + 2 * far ** -3 + 1 / (12 * far ** 2))
    c0 = tuple(-r for r in RATIO[1:])  # c0 = (1 - ratio) / mu
    taylor = (RATIO, c0, C1, _derivative(c0), _derivative(C1))
    return tuple(where(near, _polynomial(small, coefficients[::-1]), value) for coefficients, value in zip(taylor, closed))


def _derivative(coefficients: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(k * c for k, c in enumerate(coefficients) if k)


__all__ = ["reparameterized_standard_gamma", "standard_gamma", "standard_gamma_gradient"]
