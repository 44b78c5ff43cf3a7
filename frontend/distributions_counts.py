"""The count families of ``kiln.distributions``: ``Poisson(rate)`` and ``Binomial(total_count, probs | logits)``,
with ``torch.distributions``' formulas (values and gradients agree to rounding), and PyTorch's KL rules for them.

```
           log_prob(k)
Poisson    xlogy(k, r) - r - lgamma(k + 1)
Binomial   k l - lgamma(k + 1) - lgamma(n - k + 1) + lgamma(n + 1) - n max(l, 0) - n log1p(exp(-|l|))   (l: logits)
```

``sample`` draws from concrete parameters (outside a trace, as ``Dirichlet``'s: NumPy's Poisson and binomial samplers
seeded from kiln's generator). ``Binomial.entropy`` and ``enumerate_support`` sum over ``0..n`` and so need one
concrete ``total_count`` for the whole batch, as torch's. ``Poisson`` has no entropy, as torch's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.distributions import (Constraint, Distribution, broadcast, concrete_values, constant, nonnegative,
                                         nonnegative_integer, numpy_sample, real, unit_interval)
from kiln.frontend.distributions_discrete import Bernoulli, BinaryProbabilities, _one_of
from kiln.frontend.distributions_kl import register_infinite, register_kl, where
from kiln.frontend.tensor import Tensor


class Poisson(Distribution):
    """``Poisson(rate)``: ``k`` events with probability ``r^k exp(-r) / k!``."""

    arg_constraints = {"rate": nonnegative}
    support = nonnegative_integer

    def __init__(self, rate: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, rate=rate)

    rate = property(lambda self: self._parameter("rate"))
    mean = property(lambda self: self.rate)
    mode = property(lambda self: self.rate.floor())
    variance = property(lambda self: self.rate)

    def log_prob(self, value: Any) -> Tensor:
        value, rate = self._value(value), self.rate
        return value.xlogy(rate) - rate - (value + 1).lgamma()

    def sample(self, sample_shape: Any = ()) -> Tensor:
        return numpy_sample(self, sample_shape,
                            lambda rng, shape: rng.poisson(np.broadcast_to(self.rate.numpy(), shape)))


class Binomial(BinaryProbabilities, Distribution):
    """``Binomial(total_count=n, probs=p)`` or ``(total_count=n, logits=l)``: successes in ``n`` Bernoulli trials."""

    arg_constraints = {"total_count": nonnegative_integer, "probs": unit_interval, "logits": real}
    has_enumerate_support = True

    def __init__(self, total_count: Any = 1, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        self._set_parameters(validate_args, total_count=total_count, **_one_of("Binomial", probs, logits))

    total_count = property(lambda self: self._parameter("total_count"))

    @property
    def support(self) -> Constraint:
        """``0 <= k <= total_count``, integers (torch's ``integer_interval(0, total_count)``)."""
        count = concrete_values(self._raw["total_count"])
        bound = np.inf if count is None else np.broadcast_to(count, self.batch_shape)
        return Constraint("an integer in [0, total_count]", lambda x: nonnegative_integer.check(x) & (x <= bound))

    param_shape = property(lambda self: self.batch_shape)
    mean = property(lambda self: self.total_count * self.probs)
    variance = property(lambda self: self.total_count * self.probs * (1 - self.probs))

    @property
    def mode(self) -> Tensor:
        count = self.total_count
        return ((count + 1) * self.probs).floor().clamp(max=count)

    def log_prob(self, value: Any) -> Tensor:
        value, count, logits = self._value(value), self.total_count, self.logits
        clamped = (logits.clamp(min=0) + logits - logits.clamp(max=0)) / 2  # torch's _clamp_by_zero: max(l, 0), half slope at 0
        normalizer = count * clamped + count * (-logits.abs()).exp().log1p() - (count + 1).lgamma()
        return value * logits - (value + 1).lgamma() - (count - value + 1).lgamma() - normalizer

    def entropy(self) -> Tensor:
        log_prob = self.log_prob(self._support_values("entropy"))
        return -(log_prob.exp() * log_prob).sum(0)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        """``0..n`` shaped ``(n + 1, 1, ...)``, or ``(n + 1, *batch_shape)`` with ``expand``."""
        values = self._support_values("enumerate_support")
        return broadcast(values, tuple(values.shape[:1]) + self.batch_shape) if expand else values

    def _support_values(self, method: str) -> Tensor:
        count = self._homogeneous_count(method)
        return constant(np.arange(count + 1).reshape((-1,) + (1,) * len(self.batch_shape)), self.dtype)

    def _homogeneous_count(self, method: str) -> int:
        counts = concrete_values(self._raw["total_count"])
        if counts is None:
            raise NotImplementedError(f"Binomial.{method} sums over 0..total_count and needs a concrete total_count; "
                                      "pass it as a number or an array, not a traced tensor")
        if counts.min() != counts.max():
            raise NotImplementedError(f"Inhomogeneous total count not supported by `{method}`.")
        return int(counts.max())

    def sample(self, sample_shape: Any = ()) -> Tensor:
        def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
            counts = np.broadcast_to(self.total_count.numpy(), shape).astype(np.int64)
            return rng.binomial(counts, np.broadcast_to(self.probs.numpy(), shape))

        return numpy_sample(self, sample_shape, draw)


@register_kl(Poisson, Poisson)
def _kl_poisson_poisson(p: Poisson, q: Poisson) -> Tensor:
    return p.rate * (p.rate.log() - q.rate.log()) - (p.rate - q.rate)


@register_kl(Binomial, Binomial)
def _kl_binomial_binomial(p: Binomial, q: Binomial) -> Tensor:
    """Infinite where ``p`` counts more trials than ``q``; fewer is torch's NotImplementedError (NaN for traced counts)."""
    counts_p, counts_q = concrete_values(p._raw["total_count"]), concrete_values(q._raw["total_count"])
    if counts_p is not None and counts_q is not None and np.any(np.less(counts_p, counts_q)):
        raise NotImplementedError("KL between Binomials where q.total_count > p.total_count is not implemented")
    kl = p.total_count * (p.probs * (p.logits - q.logits) + (-p.probs).log1p() - (-q.probs).log1p())
    kl = where(p.total_count < q.total_count, float("nan"), kl)
    return where(p.total_count > q.total_count, float("inf"), kl)


@register_kl(Bernoulli, Poisson)
def _kl_bernoulli_poisson(p: Bernoulli, q: Poisson) -> Tensor:
    return -p.entropy() - (p.probs * q.rate.log() - q.rate)


register_infinite((Poisson, Bernoulli), (Poisson, Binomial))  # q has a largest count and p has none


__all__ = ["Binomial", "Poisson"]
