"""``Gamma(concentration, rate)``, ``Chi2(df)`` and ``Beta(concentration1, concentration0)``, with
``torch.distributions``' formulas (values and gradients agree to rounding), and PyTorch's KL rules among them and the
other continuous families.

```
           log_prob(x)                                            entropy
Gamma      xlogy(a, r) + xlogy(a - 1, x) - r x - lgamma(a)        a - log r + lgamma(a) + (1 - a) digamma(a)
Chi2       Gamma(df / 2, 1 / 2)
Beta       (a - 1) log x + (b - 1) log(1 - x) + lgamma(a + b)     lgamma(a) + lgamma(b) - lgamma(a + b)
             - lgamma(a) - lgamma(b)                                - (2 - a - b) digamma(a + b)
                                                                    - (a - 1) digamma(a) - (b - 1) digamma(b)
```

``rsample`` draws from the step's seed, in a traced step or eagerly, with the implicit reparameterization gradient to the
concentrations (``frontend/distributions_gamma_sampler.py``; Beta normalizes two Gamma draws); the numbers are kiln's,
the distribution torch's. ``Gamma.cdf`` (the regularized incomplete gamma function) is not implemented: it raises,
saying so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.frontend.distributions import Constraint, Distribution, nonnegative, positive
from kiln.frontend.distributions_continuous import Exponential, Laplace, Normal, Uniform
from kiln.frontend.distributions_gamma_sampler import reparameterized_standard_gamma
from kiln.frontend.distributions_kl import register_infinite, register_kl, where
from kiln.frontend.tensor import Tensor

unit_interval_support = Constraint("in [0, 1]", lambda x: (x >= 0) & (x <= 1), kind="interval",
                                   params={"lower_bound": 0.0, "upper_bound": 1.0})
_EULER_GAMMA = 0.57721566490153286060


class Gamma(Distribution):
    """``Gamma(concentration, rate)``: density ``r^a x^(a-1) exp(-r x) / Gamma(a)`` on ``x >= 0``."""

    arg_constraints = {"concentration": positive, "rate": positive}
    support = nonnegative
    has_rsample = True

    def __init__(self, concentration: Any, rate: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, concentration=concentration, rate=rate)

    concentration = property(lambda self: self._parameter("concentration"))
    rate = property(lambda self: self._parameter("rate"))
    mean = property(lambda self: self.concentration / self.rate)
    mode = property(lambda self: ((self.concentration - 1) / self.rate).clamp(min=0))
    variance = property(lambda self: self.concentration / self.rate.pow(2))

    def log_prob(self, value: Any) -> Tensor:
        value, concentration, rate = self._value(value), self.concentration, self.rate
        return concentration.xlogy(rate) + (concentration - 1).xlogy(value) - rate * value - concentration.lgamma()

    def entropy(self) -> Tensor:
        concentration = self.concentration
        return concentration - self.rate.log() + concentration.lgamma() + (1.0 - concentration) * concentration.digamma()

    def cdf(self, value: Any) -> Tensor:
        """The regularized lower incomplete gamma ``P(a, r x)`` (torch's ``special.gammainc``)."""
        value = self._value(value)
        return self.concentration.igamma(self.rate * value)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        """Draws shaped ``sample_shape + batch_shape``, at least the dtype's smallest normal number (torch's clamp)."""
        shape = self._extended_shape(sample_shape)
        draws = reparameterized_standard_gamma(self, self.concentration, shape) / self.rate
        return draws.clamp(min=float(np.finfo(self.dtype.numpy).tiny))


class Chi2(Gamma):
    """``Chi2(df)``: ``Gamma(df / 2, 1 / 2)``, the sum of ``df`` squared standard normals."""

    def __init__(self, df: Any, validate_args: bool | None = None):
        super().__init__(0.5 * df, 0.5, validate_args)

    df = property(lambda self: self.concentration * 2)


class Beta(Distribution):
    """``Beta(concentration1, concentration0)``: density ``x^(a-1) (1-x)^(b-1) / B(a, b)`` on ``[0, 1]``."""

    arg_constraints = {"concentration1": positive, "concentration0": positive}
    support = unit_interval_support
    has_rsample = True

    def __init__(self, concentration1: Any, concentration0: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, concentration1=concentration1, concentration0=concentration0)

    concentration1 = property(lambda self: self._parameter("concentration1"))
    concentration0 = property(lambda self: self._parameter("concentration0"))
    mean = property(lambda self: self.concentration1 / (self.concentration1 + self.concentration0))

    @property
    def mode(self) -> Tensor:
        """torch's (its Dirichlet's first coordinate): ``(a - 1)+ / ((a - 1)+ + (b - 1)+)``, 1 where both are below 1."""
        a, b = self.concentration1, self.concentration0
        above_a, above_b = (a - 1).clamp(min=0.0), (b - 1).clamp(min=0.0)
        return where((a < 1) & (b < 1), 1.0, above_a / (above_a + above_b))

    @property
    def variance(self) -> Tensor:
        a, b = self.concentration1, self.concentration0
        total = a + b
        return a * b / (total.pow(2) * (total + 1))

    def log_prob(self, value: Any) -> Tensor:
        value, a, b = self._value(value), self.concentration1, self.concentration0
        return value.log() * (a - 1.0) + (1.0 - value).log() * (b - 1.0) + (a + b).lgamma() - (a.lgamma() + b.lgamma())

    def entropy(self) -> Tensor:
        a, b = self.concentration1, self.concentration0
        total = a + b
        return (a.lgamma() + b.lgamma() - total.lgamma() - (2 - total) * total.digamma()
                - ((a - 1.0) * a.digamma() + (b - 1.0) * b.digamma()))

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        """``X / (X + Y)`` of Gamma draws, in ``(0, 1)`` (torch's ``clamp_probs``), shaped ``sample_shape + batch_shape``."""
        shape = self._extended_shape(sample_shape)
        first = reparameterized_standard_gamma(self, self.concentration1, shape)
        second = reparameterized_standard_gamma(self, self.concentration0, shape)
        finfo = np.finfo(self.dtype.numpy)
        return (first / (first + second)).clamp(float(finfo.tiny), float(1 - finfo.eps))


def _x_log_x(x: Tensor) -> Tensor:
    return x * x.log()


@register_kl(Gamma, Gamma)
def _kl_gamma_gamma(p: Gamma, q: Gamma) -> Tensor:
    t1 = q.concentration * (p.rate / q.rate).log()
    t2 = q.concentration.lgamma() - p.concentration.lgamma()
    t3 = (p.concentration - q.concentration) * p.concentration.digamma()
    return t1 + t2 + t3 + (q.rate - p.rate) * (p.concentration / p.rate)


@register_kl(Beta, Beta)
def _kl_beta_beta(p: Beta, q: Beta) -> Tensor:
    sum_p, sum_q = p.concentration1 + p.concentration0, q.concentration1 + q.concentration0
    t1 = q.concentration1.lgamma() + q.concentration0.lgamma() + sum_p.lgamma()
    t2 = p.concentration1.lgamma() + p.concentration0.lgamma() + sum_q.lgamma()
    t3 = (p.concentration1 - q.concentration1) * p.concentration1.digamma()
    t4 = (p.concentration0 - q.concentration0) * p.concentration0.digamma()
    return t1 - t2 + t3 + t4 + (sum_q - sum_p) * sum_p.digamma()


@register_kl(Beta, Exponential)
def _kl_beta_exponential(p: Beta, q: Exponential) -> Tensor:
    return -p.entropy() - q.rate.log() + q.rate * p.mean


@register_kl(Beta, Gamma)
def _kl_beta_gamma(p: Beta, q: Gamma) -> Tensor:
    t2 = q.concentration.lgamma() - q.concentration * q.rate.log()
    t3 = (q.concentration - 1) * (p.concentration1.digamma() - (p.concentration1 + p.concentration0).digamma())
    return -p.entropy() + t2 - t3 + q.rate * p.mean


@register_kl(Beta, Normal)
def _kl_beta_normal(p: Beta, q: Normal) -> Tensor:
    mean, var_normal = p.mean, q.scale.pow(2)
    t2 = 0.5 * (var_normal * 2 * math.pi).log()
    t3 = (mean * (1 - mean) / (p.concentration1 + p.concentration0 + 1) + mean.pow(2)) * 0.5
    return -p.entropy() + t2 + (t3 - q.loc * mean + q.loc.pow(2) * 0.5) / var_normal


@register_kl(Beta, Uniform)
def _kl_beta_uniform(p: Beta, q: Uniform) -> Tensor:
    result = -p.entropy() + (q.high - q.low).log()
    return where((q.low > 0) | (q.high < 1), math.inf, result)


@register_kl(Exponential, Gamma)
def _kl_exponential_gamma(p: Exponential, q: Gamma) -> Tensor:
    ratio = q.rate / p.rate
    t1 = -q.concentration * ratio.log()
    return t1 + ratio + q.concentration.lgamma() + q.concentration * _EULER_GAMMA - (1 + _EULER_GAMMA)


@register_kl(Gamma, Exponential)
def _kl_gamma_exponential(p: Gamma, q: Exponential) -> Tensor:
    return -p.entropy() - q.rate.log() + q.rate * p.concentration / p.rate


@register_kl(Gamma, Normal)
def _kl_gamma_normal(p: Gamma, q: Normal) -> Tensor:
    var_normal, beta_sqr = q.scale.pow(2), p.rate.pow(2)
    t1 = 0.5 * (beta_sqr * var_normal * 2 * math.pi).log() - p.concentration - p.concentration.lgamma()
    t2 = 0.5 * (p.concentration.pow(2) + p.concentration) / beta_sqr
    t3 = q.loc * p.concentration / p.rate
    return t1 + (p.concentration - 1) * p.concentration.digamma() + (t2 - t3 + 0.5 * q.loc.pow(2)) / var_normal


@register_kl(Uniform, Beta)
def _kl_uniform_beta(p: Uniform, q: Beta) -> Tensor:
    width = p.high - p.low
    t2 = (q.concentration1 - 1) * (_x_log_x(p.high) - _x_log_x(p.low) - width) / width
    t3 = (q.concentration0 - 1) * (_x_log_x(1 - p.high) - _x_log_x(1 - p.low) + width) / width
    t4 = q.concentration1.lgamma() + q.concentration0.lgamma() - (q.concentration1 + q.concentration0).lgamma()
    return where((p.high > 1) | (p.low < 0), math.inf, t3 + t4 - width.log() - t2)


@register_kl(Uniform, Gamma)
def _kl_uniform_gamma(p: Uniform, q: Gamma) -> Tensor:
    width = p.high - p.low
    t2 = q.concentration.lgamma() - q.concentration * q.rate.log()
    t3 = (1 - q.concentration) * (_x_log_x(p.high) - _x_log_x(p.low) - width) / width
    return where(p.low < 0, math.inf, -width.log() + t2 + t3 + q.rate * (p.high + p.low) / 2)


register_infinite((Exponential, Beta), (Gamma, Beta), (Gamma, Uniform), (Laplace, Beta), (Laplace, Gamma),
                  (Normal, Beta), (Normal, Gamma))


__all__ = ["Beta", "Chi2", "Gamma"]
