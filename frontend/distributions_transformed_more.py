"""Families built from others: ``InverseGamma(concentration, rate)``, ``Kumaraswamy(concentration1, concentration0)``,
``FisherSnedecor(df1, df2)``, ``LogisticNormal(loc, scale)``, with ``torch.distributions``' formulas (values and
gradients agree to rounding).

```
                as torch builds it                                   log_prob(x)                      entropy
InverseGamma    1 / G, G ~ Gamma(a, r)                               (through PowerTransform(-1))     a + log r + lgamma(a)
                                                                                                        - (1 + a) digamma(a)
Kumaraswamy     (1 - U^(1/b))^(1/a), U ~ U[0, 1)                     (through the transforms)         (1 - 1/b) + (1 - 1/a) H_b
                                                                                                        - log a - log b
FisherSnedecor  X1 / X2, Xi ~ Gamma(d_i / 2, d_i)                    lgamma((d1+d2)/2) - lgamma(d1/2)  (none in torch)
                                                                       - lgamma(d2/2) + d1/2 log(d1/d2)
                                                                       + (d1/2 - 1) log x
                                                                       - (d1+d2)/2 log1p(d1 x / d2)
LogisticNormal  StickBreakingTransform of Normal(loc, scale)         (through the transform)          (none in torch)
```
(``H_b = digamma(b + 1) + gamma``, the harmonic number of ``b``; Kumaraswamy's n-th moment is
``b B(1 + n/a, b)``.) The Gamma draws are ``Gamma.rsample``'s (traced, with the implicit reparameterization gradient
to the concentrations, ``distributions_gamma_sampler.py``); ``InverseGamma`` and ``Kumaraswamy`` are
``TransformedFamily``s, ``LogisticNormal`` a ``TransformedDistribution`` over the simplex of ``loc``'s last dim
plus one.
"""

from __future__ import annotations

import math
from typing import Any

from kiln.frontend.distributions import Distribution, positive, real
from kiln.frontend.distributions_continuous import Normal, Uniform
from kiln.frontend.distributions_dirichlet import simplex
from kiln.frontend.distributions_extreme import EULER_GAMMA
from kiln.frontend.distributions_gamma import Gamma, unit_interval_support
from kiln.frontend.distributions_kl import where
from kiln.frontend.distributions_transformed import TransformedDistribution
from kiln.frontend.distributions_transformed_family import TransformedFamily
from kiln.frontend.distributions_transforms import AffineTransform, PowerTransform, Transform
from kiln.frontend.distributions_transforms_more import StickBreakingTransform
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_dtypes import finfo


class InverseGamma(TransformedFamily):
    """``InverseGamma(concentration, rate)``: ``1 / X`` for ``X ~ Gamma(concentration, rate)``."""

    arg_constraints = {"concentration": positive, "rate": positive}
    support = positive
    has_rsample = True

    def __init__(self, concentration: Any, rate: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, concentration=concentration, rate=rate)

    concentration = property(lambda self: self._parameter("concentration"))
    rate = property(lambda self: self._parameter("rate"))
    mode = property(lambda self: self.rate / (self.concentration + 1))
    mean = property(lambda self: where(self.concentration > 1, self.rate / (self.concentration - 1), math.inf))

    @property
    def variance(self) -> Tensor:
        a = self.concentration
        return where(a > 2, self.rate.square() / ((a - 1).square() * (a - 2)), math.inf)

    def _base(self) -> Distribution:
        return Gamma(self.concentration, self.rate, validate_args=False)

    def _transforms(self) -> list[Transform]:
        return [PowerTransform(-1.0)]

    def entropy(self) -> Tensor:
        a = self.concentration
        return a + self.rate.log() + a.lgamma() - (1 + a) * a.digamma()


def _kumaraswamy_moment(a: Tensor, b: Tensor, n: int) -> Tensor:
    """``E[X^n] = b B(1 + n / a, b)``, by ``lgamma`` (torch's ``_moments``)."""
    first = 1 + n / a
    return b * (first.lgamma() + b.lgamma() - (first + b).lgamma()).exp()


class Kumaraswamy(TransformedFamily):
    """``Kumaraswamy(concentration1, concentration0)``: density ``a b x^(a-1) (1 - x^a)^(b-1)`` on ``[0, 1]``."""

    arg_constraints = {"concentration1": positive, "concentration0": positive}
    support = unit_interval_support
    has_rsample = True

    def __init__(self, concentration1: Any, concentration0: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, concentration1=concentration1, concentration0=concentration0)

    concentration1 = property(lambda self: self._parameter("concentration1"))
    concentration0 = property(lambda self: self._parameter("concentration0"))
    mean = property(lambda self: _kumaraswamy_moment(self.concentration1, self.concentration0, 1))
    variance = property(lambda self: _kumaraswamy_moment(self.concentration1, self.concentration0, 2) - self.mean.pow(2))

    @property
    def mode(self) -> Tensor:
        """``((a - 1) / (a b - 1))^(1/a)`` by logs as torch's; NaN where ``a < 1`` or ``b < 1``."""
        a, b = self.concentration1, self.concentration0
        log_mode = b.reciprocal() * (-b).log1p() - (-b * a).log1p()
        return where((b < 1) | (a < 1), math.nan, log_mode).exp()

    def _base(self) -> Distribution:
        return Uniform(self._filled(0.0), self._filled(1.0), validate_args=False)

    def _transforms(self) -> list[Transform]:
        return [PowerTransform(self.concentration0.reciprocal()), AffineTransform(1.0, -1.0),
                PowerTransform(self.concentration1.reciprocal())]

    def entropy(self) -> Tensor:
        a, b = self.concentration1, self.concentration0
        harmonic = (b + 1).digamma() + EULER_GAMMA
        return (1 - b.reciprocal()) + (1 - a.reciprocal()) * harmonic - a.log() - b.log()


class FisherSnedecor(Distribution):
    """``FisherSnedecor(df1, df2)``: the F distribution, ``(X1 / d1) / (X2 / d2)`` for chi-squared ``Xi``."""

    arg_constraints = {"df1": positive, "df2": positive}
    support = positive
    has_rsample = True

    def __init__(self, df1: Any, df2: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, df1=df1, df2=df2)

    df1 = property(lambda self: self._parameter("df1"))
    df2 = property(lambda self: self._parameter("df2"))

    @property
    def mean(self) -> Tensor:
        """``d2 / (d2 - 2)``, NaN for ``d2 <= 2``."""
        df2 = where(self.df2 <= 2, math.nan, self.df2)
        return df2 / (df2 - 2)

    @property
    def mode(self) -> Tensor:
        df1, df2 = self.df1, self.df2
        return where(df1 <= 2, math.nan, (df1 - 2) / df1 * df2 / (df2 + 2))

    @property
    def variance(self) -> Tensor:
        """``2 d2^2 (d1 + d2 - 2) / (d1 (d2 - 2)^2 (d2 - 4))``, NaN for ``d2 <= 4``."""
        df1, df2 = self.df1, where(self.df2 <= 4, math.nan, self.df2)
        return 2 * df2.pow(2) * (df1 + df2 - 2) / (df1 * (df2 - 2).pow(2) * (df2 - 4))

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        df1, df2 = self.df1, self.df2
        tiny = finfo.of(self.dtype).tiny
        first = Gamma(df1 * 0.5, df1, validate_args=False).rsample(sample_shape)
        second = Gamma(df2 * 0.5, df2, validate_args=False).rsample(sample_shape).clamp(min=tiny)
        return (first / second).clamp(min=tiny)

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value)
        half1, half2, ratio = self.df1 * 0.5, self.df2 * 0.5, self.df1 / self.df2
        t1 = (half1 + half2).lgamma() - half1.lgamma() - half2.lgamma()
        t2 = half1 * ratio.log() + (half1 - 1) * value.log()
        return t1 + t2 - (half1 + half2) * (ratio * value).log1p()


class LogisticNormal(TransformedDistribution):
    """``LogisticNormal(loc, scale)``: ``StickBreakingTransform`` of ``Normal(loc, scale)`` (its last dim one event,
    one longer on the simplex); a scalar ``loc`` and ``scale`` give a two-point simplex, as torch's."""

    arg_constraints = {"loc": real, "scale": positive}
    support = simplex
    has_rsample = True

    def __init__(self, loc: Any, scale: Any, validate_args: bool | None = None):
        base = Normal(loc, scale, validate_args=validate_args)
        super().__init__(base if base.batch_shape else base.expand((1,)), StickBreakingTransform(), validate_args)

    loc = property(lambda self: self.base_dist.base_dist.loc)
    scale = property(lambda self: self.base_dist.base_dist.scale)

    def log_prob(self, value: Any) -> Tensor:
        """Checks a concrete ``value`` is on the simplex (torch's ``validate_args``), then ``TransformedDistribution``'s."""
        return super().log_prob(self._value(value, "log_prob", simplex))


__all__ = ["FisherSnedecor", "InverseGamma", "Kumaraswamy", "LogisticNormal"]
