"""``ContinuousBernoulli(probs | logits, lims=(0.499, 0.501))``: the density ``C(p) p^x (1 - p)^(1 - x)`` on ``[0, 1]``
(Loaiza-Ganem and Cunningham 2019, the likelihood a VAE with values in [0, 1] should use), with
``torch.distributions``' formulas (values and gradients agree to rounding) and its KL rules.

```
log C(p)     log |log1p(-p) - log p| - log |1 - 2p|            (p outside lims)
             log 2 + (4/3 + 104/45 x) x,  x = (p - 1/2)^2      (p inside lims: the Taylor branch; the closed form is 0/0 at 1/2)
log_prob(x)  -bce_with_logits(l, x) + log C(p)
mean         p / (2p - 1) + 1 / (log1p(-p) - log p)            1/2 + (1/3 + 16/45 t^2) t,  t = p - 1/2
variance     p (p - 1) / (1 - 2p)^2 + 1 / (log1p(-p) - log p)^2   1/12 - (1/15 - 128/945 x) x
cdf(x)       (p^x (1 - p)^(1 - x) + p - 1) / (2p - 1)          x
icdf(u)      (log1p(-p + u (2p - 1)) - log1p(-p)) / (log p - log1p(-p))   u
entropy      mean (log1p(-p) - log p) - log C(p) - log1p(-p)
rsample      icdf(u),  u ~ U[0, 1) from the step's seed
```

Inside ``lims`` the closed forms use ``p = lims[0]`` (``_cut_probs``) and the result is the Taylor branch's, so gradients
stay finite at ``p = 1/2``. ``probs`` is clamped to ``[eps, 1 - eps]`` as torch's; ``validate_args`` checks the
concrete ``probs`` given before that clamp (torch checks it only when ``validate_args`` is passed explicitly).
"""

from __future__ import annotations

import math
from typing import Any

from kiln.frontend.distributions import Distribution, real, unit_interval
from kiln.frontend.distributions_continuous import Exponential, Laplace, Normal, Uniform
from kiln.frontend.distributions_discrete import _binary_logits, _broadcast_pair, _one_of, clamp_probs
from kiln.frontend.distributions_extreme import Gumbel, Pareto
from kiln.frontend.distributions_gamma import Beta, Gamma, unit_interval_support
from kiln.frontend.distributions_kl import infinite_like, register_kl, where
from kiln.frontend.functional_losses import binary_cross_entropy_with_logits
from kiln.frontend.tensor import Tensor


class ContinuousBernoulli(Distribution):
    """``ContinuousBernoulli(probs=p)`` or ``(logits=l)``: a density on ``[0, 1]``; ``p`` is its shape parameter in
    ``(0, 1)``, not a mean, and ``l = logit(p)``."""

    arg_constraints = {"probs": unit_interval, "logits": real}
    support = unit_interval_support
    has_rsample = True

    def __init__(self, probs: Any = None, logits: Any = None, lims: tuple[float, float] = (0.499, 0.501),
                 validate_args: bool | None = None):
        self._set_parameters(validate_args, **_one_of("ContinuousBernoulli", probs, logits))
        self._lims = lims

    @property
    def probs(self) -> Tensor:
        if "probs" in self._raw:
            return self._traced("probs", lambda: clamp_probs(self._parameter("probs")))
        return self._traced("probs", lambda: clamp_probs(self._parameter("logits").sigmoid()))

    @property
    def logits(self) -> Tensor:
        if "logits" in self._raw:
            return self._parameter("logits")
        return self._traced("logits", lambda: _binary_logits(clamp_probs(self.probs)))

    param_shape = property(lambda self: self.batch_shape)

    def _outside_unstable_region(self) -> Tensor:
        probs = self.probs
        return (probs <= self._lims[0]) | (probs > self._lims[1])

    def _cut_probs(self) -> Tensor:
        """``probs`` outside ``lims``, ``lims[0]`` inside (where the closed forms are not used)."""
        return where(self._outside_unstable_region(), self.probs, self._lims[0])

    def _cont_bern_log_norm(self) -> Tensor:
        """``log C(p)``, the log normalizing constant (torch's name: its KL rules call it)."""
        cut = self._cut_probs()
        below_half = where(cut <= 0.5, cut, 0.0)
        above_half = where(cut >= 0.5, cut, 1.0)
        log_norm = ((-cut).log1p() - cut.log()).abs().log() - where(
            cut <= 0.5, (-2.0 * below_half).log1p(), (2.0 * above_half - 1.0).log())
        x = (self.probs - 0.5).pow(2)
        taylor = math.log(2.0) + (4.0 / 3.0 + 104.0 / 45.0 * x) * x
        return where(self._outside_unstable_region(), log_norm, taylor)

    @property
    def mean(self) -> Tensor:
        cut = self._cut_probs()
        mus = cut / (2.0 * cut - 1.0) + 1.0 / ((-cut).log1p() - cut.log())
        x = self.probs - 0.5
        taylor = 0.5 + (1.0 / 3.0 + 16.0 / 45.0 * x.pow(2)) * x
        return where(self._outside_unstable_region(), mus, taylor)

    @property
    def variance(self) -> Tensor:
        cut = self._cut_probs()
        variances = cut * (cut - 1.0) / (1.0 - 2.0 * cut).pow(2) + 1.0 / ((-cut).log1p() - cut.log()).pow(2)
        x = (self.probs - 0.5).pow(2)
        taylor = 1.0 / 12.0 - (1.0 / 15.0 - 128.0 / 945.0 * x) * x
        return where(self._outside_unstable_region(), variances, taylor)

    def log_prob(self, value: Any) -> Tensor:
        logits, value = _broadcast_pair(self.logits, self._value(value))
        return -binary_cross_entropy_with_logits(logits, value, reduction="none") + self._cont_bern_log_norm()

    def cdf(self, value: Any) -> Tensor:
        value = self._value(value, "cdf")
        cut = self._cut_probs()
        cdfs = (cut.pow(value) * (1.0 - cut).pow(1.0 - value) + cut - 1.0) / (2.0 * cut - 1.0)
        unbounded = where(self._outside_unstable_region(), cdfs, value)
        return where(value <= 0.0, 0.0, where(value >= 1.0, 1.0, unbounded))

    def icdf(self, value: Any) -> Tensor:
        value, cut = self._probability(value), self._cut_probs()
        inverted = ((-cut + value * (2.0 * cut - 1.0)).log1p() - (-cut).log1p()) / (cut.log() - (-cut).log1p())
        return where(self._outside_unstable_region(), inverted, value)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        return self.icdf(self._uniform(self._extended_shape(sample_shape)))

    def entropy(self) -> Tensor:
        log_probs0, log_probs1 = (-self.probs).log1p(), self.probs.log()
        return self.mean * (log_probs0 - log_probs1) - self._cont_bern_log_norm() - log_probs0


def _cross_term(p: Distribution, q: ContinuousBernoulli) -> Tensor:
    """``-E_p[log q(x)] - H(p)``: KL(p || q) for a ``p`` on ``[0, 1]`` with a closed-form mean and entropy."""
    return -p.entropy() - p.mean * q.logits - (-q.probs).log1p() - q._cont_bern_log_norm()


@register_kl(ContinuousBernoulli, ContinuousBernoulli)
def _kl_continuous_bernoulli_continuous_bernoulli(p: ContinuousBernoulli, q: ContinuousBernoulli) -> Tensor:
    t1 = p.mean * (p.logits - q.logits)
    t2 = p._cont_bern_log_norm() + (-p.probs).log1p()
    t3 = -q._cont_bern_log_norm() - (-q.probs).log1p()
    return t1 + t2 + t3


@register_kl(ContinuousBernoulli, Exponential)
def _kl_continuous_bernoulli_exponential(p: ContinuousBernoulli, q: Exponential) -> Tensor:
    return -p.entropy() - q.rate.log() + q.rate * p.mean


@register_kl(ContinuousBernoulli, Normal)
def _kl_continuous_bernoulli_normal(p: ContinuousBernoulli, q: Normal) -> Tensor:
    t2 = 0.5 * (math.log(2.0 * math.pi) + (q.loc / q.scale).square()) + q.scale.log()
    t3 = (p.variance + p.mean.square() - 2.0 * q.loc * p.mean) / (2.0 * q.scale.square())
    return -p.entropy() + t2 + t3


@register_kl(ContinuousBernoulli, Uniform)
def _kl_continuous_bernoulli_uniform(p: ContinuousBernoulli, q: Uniform) -> Tensor:
    """Infinite where ``q.low >= 0`` or ``q.high <= 1`` (torch's condition, word for word)."""
    result = -p.entropy() + (q.high - q.low).log()
    return where((q.low >= 0.0) | (q.high <= 1.0), math.inf, result)


@register_kl(Beta, ContinuousBernoulli)
def _kl_beta_continuous_bernoulli(p: Beta, q: ContinuousBernoulli) -> Tensor:
    return _cross_term(p, q)


@register_kl(Uniform, ContinuousBernoulli)
def _kl_uniform_continuous_bernoulli(p: Uniform, q: ContinuousBernoulli) -> Tensor:
    """Infinite where ``p.high >= 1`` or ``p.low <= 0`` (torch's condition, word for word)."""
    return where((p.high >= 1.0) | (p.low <= 0.0), math.inf, _cross_term(p, q))


@register_kl(ContinuousBernoulli, Pareto)
@register_kl(Exponential, ContinuousBernoulli)
@register_kl(Gamma, ContinuousBernoulli)
@register_kl(Gumbel, ContinuousBernoulli)
@register_kl(Laplace, ContinuousBernoulli)
@register_kl(Normal, ContinuousBernoulli)
@register_kl(Pareto, ContinuousBernoulli)
def _kl_infinity(p: Distribution, q: Distribution) -> Tensor:
    """``p``'s support is not inside ``q``'s: unbounded where ``q``'s is ``[0, 1]``, or ``[0, 1]`` where ``q``'s
    (a Pareto's) is ``[scale, inf)`` (torch's infinite pairs)."""
    return infinite_like(p)


__all__ = ["ContinuousBernoulli"]
