"""The heavy-tailed and folded families: ``StudentT(df, loc, scale)``, ``Cauchy(loc, scale)``, ``HalfCauchy(scale)``,
``HalfNormal(scale)``, with ``torch.distributions``' formulas (values and gradients agree to rounding), and torch's
KL rules among them.

```
            log_prob(x)                                         rsample (u ~ U[0, 1), e ~ N(0, 1))      entropy
StudentT    -(v+1)/2 log1p(y^2 / v) - log s - log(v pi)/2       m + s e / sqrt(Z / v), Z ~ Chi2(v)     log s + (v+1)/2 (psi((v+1)/2)
              - lgamma(v/2) + lgamma((v+1)/2),  y = (x-m)/s                                            - psi(v/2)) + log(v)/2 + lbeta
Cauchy      -log pi - log s - log1p(((x - m) / s)^2)             m + s tan(pi (u - 1/2))                log(4 pi s)
HalfCauchy  Cauchy(0, s)'s + log 2 on x >= 0, else -inf         |Cauchy(0, s) draw|                    Cauchy's - log 2
HalfNormal  Normal(0, s)'s + log 2 on x >= 0, else -inf         |Normal(0, s) draw|                    Normal's - log 2
```
(``lbeta = lgamma(v/2) + lgamma(1/2) - lgamma((v+1)/2)``.) ``StudentT.rsample`` draws its ``Chi2`` by
``Chi2.rsample`` (traced, with the implicit reparameterization gradient in ``df``), as torch's. The mean of a
``StudentT`` with ``df <= 1`` and a ``Cauchy``'s are NaN, their variances NaN or infinite, as torch's; ``HalfNormal``
and ``HalfCauchy`` are ``TransformedDistribution``s of ``AbsTransform`` (``distributions_transformed_family.py``).
"""

from __future__ import annotations

import math
from typing import Any

from kiln.frontend.distributions import Distribution, nonnegative, positive, real
from kiln.frontend.distributions_continuous import Normal, _LocationScale
from kiln.frontend.distributions_gamma import Chi2
from kiln.frontend.distributions_kl import kl_divergence, register_kl, where
from kiln.frontend.distributions_transformed_family import TransformedFamily
from kiln.frontend.distributions_transforms import Transform
from kiln.frontend.distributions_transforms_more import AbsTransform
from kiln.frontend.tensor import Tensor


class StudentT(Distribution):
    """``StudentT(df, loc=0, scale=1)``: ``loc + scale T`` with ``T`` Student's t with ``df`` degrees of freedom."""

    arg_constraints = {"df": positive, "loc": real, "scale": positive}
    support = real
    has_rsample = True

    def __init__(self, df: Any, loc: Any = 0.0, scale: Any = 1.0, validate_args: bool | None = None):
        self._set_parameters(validate_args, df=df, loc=loc, scale=scale)

    df = property(lambda self: self._parameter("df"))
    loc = property(lambda self: self._parameter("loc"))
    scale = property(lambda self: self._parameter("scale"))
    mode = property(lambda self: self.loc)
    mean = property(lambda self: where(self.df <= 1, math.nan, self.loc))

    @property
    def variance(self) -> Tensor:
        """``s^2 v / (v - 2)`` for ``v > 2``, infinite for ``1 < v <= 2``, NaN below (torch's masked assignments)."""
        df = self.df
        safe_df = where(df > 2, df, 3.0)  # the other branches' slopes stay 0, not 0 * inf
        infinite_or_nan = where(df > 1, self._filled(math.inf), math.nan)  # in the distribution's dtype
        return where(df > 2, self.scale.pow(2) * safe_df / (safe_df - 2), infinite_or_nan)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        df = self.df
        normal = self._standard_normal(self._extended_shape(sample_shape))
        chi2 = Chi2(df, validate_args=False).rsample(sample_shape)
        return self.loc + self.scale * (normal * (chi2 / df).rsqrt())

    def log_prob(self, value: Any) -> Tensor:
        value, df, scale = self._value(value), self.df, self.scale
        y = (value - self.loc) / scale
        z = scale.log() + 0.5 * df.log() + 0.5 * math.log(math.pi) + (0.5 * df).lgamma() - (0.5 * (df + 1.0)).lgamma()
        return -0.5 * (df + 1.0) * (y.pow(2.0) / df).log1p() - z

    def entropy(self) -> Tensor:
        df = self.df
        lbeta = (0.5 * df).lgamma() + math.lgamma(0.5) - (0.5 * (df + 1)).lgamma()
        spread = 0.5 * (df + 1) * ((0.5 * (df + 1)).digamma() - (0.5 * df).digamma())
        return self.scale.log() + spread + 0.5 * df.log() + lbeta


class Cauchy(_LocationScale):
    """``Cauchy(loc, scale)``: density ``1 / (pi s (1 + ((x - m) / s)^2))``; its mean is NaN, its variance infinite."""

    mean = property(lambda self: self._filled(math.nan))
    variance = property(lambda self: self._filled(math.inf))

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        noise = (math.pi * (self._uniform(self._extended_shape(sample_shape)) - 0.5)).tan()  # torch's cauchy_
        return self.loc + noise * self.scale

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value)
        return -math.log(math.pi) - self.scale.log() - ((value - self.loc) / self.scale).pow(2).log1p()

    def cdf(self, value: Any) -> Tensor:
        value = self._value(value, "cdf")
        return ((value - self.loc) / self.scale).atan() / math.pi + 0.5

    def icdf(self, value: Any) -> Tensor:
        return (math.pi * (self._probability(value) - 0.5)).tan() * self.scale + self.loc

    def entropy(self) -> Tensor:
        return math.log(4 * math.pi) + self.scale.log()


class _Half(TransformedFamily):
    """``|X|`` for ``X`` of the symmetric family ``_full(0, scale)``: twice its density on ``x >= 0``."""

    arg_constraints = {"scale": positive}
    support = nonnegative
    has_rsample = True
    _full: type = Normal

    def __init__(self, scale: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, scale=scale)

    scale = property(lambda self: self._parameter("scale"))
    mode = property(lambda self: self._filled(0.0))

    def _base(self) -> Distribution:
        return self._full(0.0, self.scale, validate_args=False)

    def _transforms(self) -> list[Transform]:
        return [AbsTransform()]

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value)
        return where(value >= 0, self.base_dist.log_prob(value) + math.log(2), -math.inf)

    def cdf(self, value: Any) -> Tensor:
        return 2 * self.base_dist.cdf(self._value(value, "cdf")) - 1

    def icdf(self, value: Any) -> Tensor:
        return self.base_dist.icdf((self._probability(value) + 1) / 2)

    def entropy(self) -> Tensor:
        return self.base_dist.entropy() - math.log(2)


class HalfNormal(_Half):
    """``HalfNormal(scale)``: ``|Normal(0, scale)|``."""

    mean = property(lambda self: self.scale * math.sqrt(2 / math.pi))
    variance = property(lambda self: self.scale.pow(2) * (1 - 2 / math.pi))


class HalfCauchy(_Half):
    """``HalfCauchy(scale)``: ``|Cauchy(0, scale)|``; its mean and variance are infinite."""

    _full = Cauchy
    mean = property(lambda self: self._filled(math.inf))
    variance = property(lambda self: self.base_dist.variance)


@register_kl(Cauchy, Cauchy)
def _kl_cauchy_cauchy(p: Cauchy, q: Cauchy) -> Tensor:
    """``log(((s_p + s_q)^2 + (m_p - m_q)^2) / (4 s_p s_q))`` (arXiv:1905.10965)."""
    t1 = ((p.scale + q.scale).pow(2) + (p.loc - q.loc).pow(2)).log()
    return t1 - (4 * p.scale * q.scale).log()


@register_kl(HalfNormal, HalfNormal)
def _kl_halfnormal_halfnormal(p: HalfNormal, q: HalfNormal) -> Tensor:
    return kl_divergence(p.base_dist, q.base_dist)


__all__ = ["Cauchy", "HalfCauchy", "HalfNormal", "StudentT"]
