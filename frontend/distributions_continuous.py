"""The continuous families of ``kiln.distributions``: ``Normal``, ``Uniform``, ``Laplace``, ``Exponential``, with
PyTorch's formulas (so values and gradients agree with ``torch.distributions`` to rounding).

```
              log_prob(x)                       rsample (u ~ U[0, 1), e ~ N(0, 1) by Box-Muller)   icdf(p)
Normal        -(x-m)^2/(2s^2) - log s - log sqrt(2pi)   m + s e                        m + s sqrt2 erfinv(2p - 1)
Uniform       log[l <= x < h] - log(h - l)              l + u (h - l)                  l + p (h - l)
Laplace       -log(2s) - |x - m| / s                    m - s sign(v) log1p(-|v|),     m - s sign(t) log1p(-2|t|),
                                                        v ~ U[eps - 1, 1)              t = p - 1/2
Exponential   log r - r x                               -log(1 - u) / r                -log1p(-p) / r
```

``erfinv`` (for ``Normal.icdf``) has no IR op: Giles' single-precision approximation, a Halley step on it (no
gradient), then one Newton step on ``erf`` whose slope ``sqrt(pi)/2 exp(x^2)`` is the exact derivative.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.frontend.distributions import Distribution, nonnegative, positive, real, unit_interval
from kiln.frontend.tensor import Tensor, apply

_where = lambda condition, a, b: apply("tensor.where", condition, a, b)  # noqa: E731


class Normal(Distribution):
    """``Normal(loc, scale)``: the Gaussian with mean ``loc`` and standard deviation ``scale``."""

    arg_constraints = {"loc": real, "scale": positive}
    support = real
    has_rsample = True

    def __init__(self, loc: Any, scale: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, loc=loc, scale=scale)

    loc = property(lambda self: self._parameter("loc"))
    scale = property(lambda self: self._parameter("scale"))
    mean = property(lambda self: self.loc)
    mode = property(lambda self: self.loc)
    stddev = property(lambda self: self.scale)
    variance = property(lambda self: self.stddev.pow(2))

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        return self.loc + self._standard_normal(self._extended_shape(sample_shape)) * self.scale

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value)
        var = self.scale ** 2
        return -((value - self.loc) ** 2) / (2 * var) - self.scale.log() - math.log(math.sqrt(2 * math.pi))

    def cdf(self, value: Any) -> Tensor:
        value = self._value(value, "cdf")
        return 0.5 * (1 + ((value - self.loc) * self.scale.reciprocal() / math.sqrt(2)).erf())

    def icdf(self, value: Any) -> Tensor:
        value = self._value(value, "icdf", unit_interval)
        return self.loc + self.scale * erfinv(2 * value - 1) * math.sqrt(2)

    def entropy(self) -> Tensor:
        return 0.5 + 0.5 * math.log(2 * math.pi) + self.scale.log()


class Uniform(Distribution):
    """``Uniform(low, high)``: constant density on ``[low, high)``; ``low < high`` is checked on concrete values.
    ``log_prob`` gives ``-inf`` outside the interval (values are not checked against it: its ends are parameters)."""

    arg_constraints = {"low": real, "high": real}
    has_rsample = True

    def __init__(self, low: Any, high: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, low=low, high=high)
        low, high = self._raw["low"], self._raw["high"]
        if self._validate_args and not isinstance(low, Tensor) and not isinstance(high, Tensor) and not np.all(low < high):
            raise self._invalid(
                f"Uniform is not defined when low >= high (low {low.tolist()}, high {high.tolist()}); give low < high "
                "elementwise, or pass validate_args=False")

    low = property(lambda self: self._parameter("low"))
    high = property(lambda self: self._parameter("high"))
    mean = property(lambda self: (self.high + self.low) / 2)
    mode = property(lambda self: self.high * math.nan)
    stddev = property(lambda self: (self.high - self.low) / 12 ** 0.5)
    variance = property(lambda self: (self.high - self.low).pow(2) / 12)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        return self.low + self._uniform(self._extended_shape(sample_shape)) * (self.high - self.low)

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value)
        inside = (self.low <= value).to(self.dtype) * (self.high > value).to(self.dtype)
        return inside.log() - (self.high - self.low).log()

    def cdf(self, value: Any) -> Tensor:
        value = self._value(value, "cdf")
        return ((value - self.low) / (self.high - self.low)).clamp(min=0, max=1)

    def icdf(self, value: Any) -> Tensor:
        return self._value(value, "icdf", unit_interval) * (self.high - self.low) + self.low

    def entropy(self) -> Tensor:
        return (self.high - self.low).log()


class Laplace(Distribution):
    """``Laplace(loc, scale)``: density ``exp(-|x - loc| / scale) / (2 scale)``."""

    arg_constraints = {"loc": real, "scale": positive}
    support = real
    has_rsample = True

    def __init__(self, loc: Any, scale: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, loc=loc, scale=scale)

    loc = property(lambda self: self._parameter("loc"))
    scale = property(lambda self: self._parameter("scale"))
    mean = property(lambda self: self.loc)
    mode = property(lambda self: self.loc)
    variance = property(lambda self: 2 * self.scale.pow(2))
    stddev = property(lambda self: (2 ** 0.5) * self.scale)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        eps = float(np.finfo(self.dtype.numpy).eps)
        u = self._uniform(self._extended_shape(sample_shape)) * (2 - eps) + (eps - 1)  # U[eps - 1, 1): log1p(-|u|) finite
        return self.loc - self.scale * u.sign() * (-u.abs()).log1p()

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value)
        return -(2 * self.scale).log() - (value - self.loc).abs() / self.scale

    def cdf(self, value: Any) -> Tensor:
        value = self._value(value, "cdf")
        return 0.5 - 0.5 * (value - self.loc).sign() * (-(value - self.loc).abs() / self.scale).expm1()

    def icdf(self, value: Any) -> Tensor:
        term = self._value(value, "icdf", unit_interval) - 0.5
        return self.loc - self.scale * term.sign() * (-2 * term.abs()).log1p()

    def entropy(self) -> Tensor:
        return 1 + (2 * self.scale).log()


class Exponential(Distribution):
    """``Exponential(rate)``: density ``rate exp(-rate x)`` on ``x >= 0``."""

    arg_constraints = {"rate": positive}
    support = nonnegative
    has_rsample = True

    def __init__(self, rate: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, rate=rate)

    rate = property(lambda self: self._parameter("rate"))
    mean = property(lambda self: self.rate.reciprocal())
    mode = property(lambda self: self.rate * 0.0)
    stddev = property(lambda self: self.rate.reciprocal())
    variance = property(lambda self: self.rate.pow(-2))

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        return -(1.0 - self._uniform(self._extended_shape(sample_shape))).log() / self.rate

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value)
        return self.rate.log() - self.rate * value

    def cdf(self, value: Any) -> Tensor:
        value = self._value(value, "cdf")
        return 1 - (-self.rate * value).exp()

    def icdf(self, value: Any) -> Tensor:
        return -(-self._value(value, "icdf", unit_interval)).log1p() / self.rate

    def entropy(self) -> Tensor:
        return 1.0 - self.rate.log()


# erfinv ------------------------------------------------------------------------------------------------------------

_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
            -0.00417768164, 0.246640727, 1.50140941)
_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047,
         1.00167406, 2.83297682)
"""Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011): polynomials in ``w = -log(1 - y^2)``
(central ``w < 5``, in ``w - 2.5``; tail, in ``sqrt(w) - 3``), ``erfinv(y) ~ p(w) y`` to about 1e-7 relative."""


def _polynomial(coefficients: tuple[float, ...], w: Tensor) -> Tensor:
    result = w * 0.0 + coefficients[0]
    for coefficient in coefficients[1:]:
        result = result * w + coefficient
    return result


def erfinv(y: Tensor) -> Tensor:
    """The inverse error function on (-1, 1); +-inf at +-1 and NaN outside, as ``torch.erfinv``. The gradient is
    ``sqrt(pi)/2 exp(x^2)``, exact: it comes from a last Newton step taken from a detached, converged ``x``."""
    inside = y.abs() < 1
    safe = _where(inside, y, 0.0).detach()
    w = -((1 - safe) * (1 + safe)).log()
    central = _polynomial(_CENTRAL, _where(w < 5, w, 2.5) - 2.5)
    tail = _polynomial(_TAIL, _where(w < 5, 9.0, w).sqrt() - 3)
    x = _where(w < 5, central, tail) * safe
    step = (x.erf() - safe) / (2 / math.sqrt(math.pi) * (-x * x).exp())
    x = (x - step / (1 + x * step)).detach()  # Halley: 1e-7 -> well below the dtype's rounding
    slope = 2 / math.sqrt(math.pi) * (-x * x).exp()
    x = x - (x.erf() - _where(inside, y, 0.0)) / slope
    edge = _where(y.abs() == 1, y.detach() * math.inf, y.detach() * math.nan)  # detached: 0 * inf would be a NaN slope
    return _where(inside, x, edge)


__all__ = ["Exponential", "Laplace", "Normal", "Uniform", "erfinv"]
