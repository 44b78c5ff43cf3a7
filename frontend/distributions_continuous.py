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

``Normal.icdf`` uses ``Tensor.erfinv`` (``frontend/tensor_special.py``: Giles' approximation refined by Newton steps
on ``erf``, the last one differentiated, so its slope is the exact ``sqrt(pi)/2 exp(x^2)``).
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from kiln.frontend.distributions import Constraint, Distribution, concrete_values, nonnegative, positive, real
from kiln.frontend.tensor import Tensor, apply

_where = lambda condition, a, b: apply("tensor.where", condition, a, b)  # noqa: E731


class _LocationScale(Distribution):
    """A real-valued family with a location (its mean and mode) and a positive scale: Normal's and Laplace's shared
    parameters."""

    arg_constraints = {"loc": real, "scale": positive}
    support = real
    has_rsample = True

    def __init__(self, loc: Any, scale: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, loc=loc, scale=scale)

    loc = property(lambda self: self._parameter("loc"))
    scale = property(lambda self: self._parameter("scale"))
    mean = property(lambda self: self.loc)
    mode = property(lambda self: self.loc)


class Normal(_LocationScale):
    """``Normal(loc, scale)``: the Gaussian with mean ``loc`` and standard deviation ``scale``."""

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
        value = self._probability(value)
        return self.loc + self.scale * (2 * value - 1).erfinv() * math.sqrt(2)

    def entropy(self) -> Tensor:
        return 0.5 + 0.5 * math.log(2 * math.pi) + self.scale.log()


class Uniform(Distribution):
    """``Uniform(low, high)``: constant density on ``[low, high)``; ``low < high`` and a ``log_prob`` value in
    ``[low, high]`` (torch's support) are checked on concrete values, tensors given eagerly included."""

    arg_constraints = {"low": real, "high": real}
    has_rsample = True

    def __init__(self, low: Any, high: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, low=low, high=high)
        low, high = concrete_values(self._raw["low"]), concrete_values(self._raw["high"])
        if self._validate_args and low is not None and high is not None and not np.all(low < high):
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
        value = self._value(value, support=self._interval())
        inside = (self.low <= value).to(self.dtype) * (self.high > value).to(self.dtype)
        return inside.log() - (self.high - self.low).log()

    def _interval(self) -> Constraint:
        """torch's ``constraints.interval(low, high)``, for concrete ends (a traced end checks nothing)."""
        low, high = concrete_values(self._raw["low"]), concrete_values(self._raw["high"])
        if low is None or high is None:
            return Constraint("anything", lambda x: np.ones(np.shape(x), bool))
        return Constraint(f"in [low, high] (low {low.tolist()}, high {high.tolist()})", lambda x: (low <= x) & (x <= high))

    def cdf(self, value: Any) -> Tensor:
        value = self._value(value, "cdf", self._interval())  # torch checks it against [low, high], then clamps
        return ((value - self.low) / (self.high - self.low)).clamp(min=0, max=1)

    def icdf(self, value: Any) -> Tensor:
        return self._probability(value) * (self.high - self.low) + self.low

    def entropy(self) -> Tensor:
        return (self.high - self.low).log()


class Laplace(_LocationScale):
    """``Laplace(loc, scale)``: density ``exp(-|x - loc| / scale) / (2 scale)``."""

    variance = property(lambda self: 2 * self.scale.pow(2))
    stddev = property(lambda self: (2 ** 0.5) * self.scale)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        eps = float(ml_dtypes.finfo(self.dtype.numpy).eps)
        u = self._uniform(self._extended_shape(sample_shape)) * (2 - eps) + (eps - 1)  # U[eps - 1, 1): log1p(-|u|) finite
        return self.loc - self.scale * u.sign() * (-u.abs()).log1p()

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value)
        return -(2 * self.scale).log() - (value - self.loc).abs() / self.scale

    def cdf(self, value: Any) -> Tensor:
        value = self._value(value, "cdf")
        return 0.5 - 0.5 * (value - self.loc).sign() * (-(value - self.loc).abs() / self.scale).expm1()

    def icdf(self, value: Any) -> Tensor:
        term = self._probability(value) - 0.5
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
        return -(-self._probability(value)).log1p() / self.rate

    def entropy(self) -> Tensor:
        return 1.0 - self.rate.log()


__all__ = ["Exponential", "Laplace", "Normal", "Uniform"]
