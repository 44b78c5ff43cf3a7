"""The waiting-time families of ``kiln.distributions``: ``Geometric(probs | logits)`` and
``NegativeBinomial(total_count, probs | logits)``, with ``torch.distributions``' formulas (values and gradients agree to
rounding) and its KL rule for a pair of Geometrics.

```
                  log_prob(k)                                                   mean              variance
Geometric         k log1p(-p) + log p   (k log1p(-p) is 0 where p = 1, k = 0)   1/p - 1           (1/p - 1) / p
NegativeBinomial  n logsigmoid(-l) + k logsigmoid(l)                            n exp(l)          mean / sigmoid(-l)
                    + lgamma(n + k) - lgamma(1 + k) - lgamma(n)   (0 where n + k = 0)
Geometric         entropy = bce_with_logits(l, p) / p        mode = 0
                  sample  = floor(log u / log1p(-p)),  u ~ U[tiny, 1)   (traced, from the step's seed)
NegativeBinomial  mode = floor((n - 1) exp(l)) clamped at 0
                  sample  = Poisson(Gamma(n, rate exp(-l)))   (NumPy, outside a trace, as Poisson's)
KL(Geometric p || Geometric q) = -H(p) - log1p(-q) / p - l_q
```

``p`` is the success probability (``probs``), ``l`` its log-odds (``logits``): the other is derived as torch derives
it (``logits`` from ``probs`` clamped to ``[eps, 1 - eps]``). A Geometric counts the failures before the first
success (support ``0, 1, ...``); a NegativeBinomial the successes before the ``total_count``-th failure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.distributions import (Constraint, Distribution, broadcast, concrete_values, constant, nonnegative,
                                         nonnegative_integer, numpy_sample, positive, real, unit_interval)
from kiln.frontend.distributions_discrete import Bernoulli, _one_of
from kiln.frontend.distributions_kl import register_kl, where
from kiln.frontend.functional_activation import logsigmoid
from kiln.frontend.functional_losses import binary_cross_entropy_with_logits
from kiln.frontend.tensor import Tensor

below_one = Constraint("in [0.0, 1.0)", lambda x: (x >= 0) & (x < 1))
"""torch's ``constraints.half_open_interval(0.0, 1.0)``: a NegativeBinomial's success probability."""


class Geometric(Distribution):
    """``Geometric(probs=p)`` or ``Geometric(logits=l)``: ``k`` failures before the first success, with probability
    ``(1 - p)^k p``; ``p`` in ``(0, 1]``."""

    arg_constraints = {"probs": unit_interval, "logits": real}
    support = nonnegative_integer

    def __init__(self, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        self._set_parameters(validate_args, **_one_of("Geometric", probs, logits))
        given = concrete_values(self._raw["probs"]) if "probs" in self._raw else None
        if self._validate_args and given is not None:
            self._check("probs", positive, given)  # torch's extra check beyond unit_interval: p > 0

    probs = Bernoulli.probs
    logits = Bernoulli.logits
    mean = property(lambda self: 1.0 / self.probs - 1.0)
    variance = property(lambda self: (1.0 / self.probs - 1.0) / self.probs)

    @property
    def mode(self) -> Tensor:
        self._context("mode")
        return broadcast(constant(0.0, self.dtype), self.batch_shape)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        """Inversion of the survival function ``(1 - p)^k``, as torch's."""
        tiny = float(np.finfo(self.dtype.numpy).tiny)
        uniform = self._uniform(self._extended_shape(sample_shape)).clamp(min=tiny)
        return (uniform.log() / (-self.probs.detach()).log1p()).floor()

    def log_prob(self, value: Any) -> Tensor:
        value, probs = self._value(value), self.probs
        certain = probs.eq(1.0) & value.eq(0.0)  # 0 * log(0) is 0 here (torch zeroes probs in place)
        return value * (-where(certain, 0.0, probs)).log1p() + probs.log()

    def entropy(self) -> Tensor:
        return binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none") / self.probs


class NegativeBinomial(Distribution):
    """``NegativeBinomial(total_count=n, probs=p)`` or ``(total_count=n, logits=l)``: ``k`` successes before the
    ``n``-th failure (``n`` a non-negative real), ``p`` the probability of success in ``[0, 1)``."""

    arg_constraints = {"total_count": nonnegative, "probs": below_one, "logits": real}
    support = nonnegative_integer

    def __init__(self, total_count: Any, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        self._set_parameters(validate_args, total_count=total_count, **_one_of("NegativeBinomial", probs, logits))

    total_count = property(lambda self: self._parameter("total_count"))
    probs = Bernoulli.probs
    logits = Bernoulli.logits
    param_shape = property(lambda self: self.batch_shape)
    mean = property(lambda self: self.total_count * self.logits.exp())
    mode = property(lambda self: ((self.total_count - 1) * self.logits.exp()).floor().clamp(min=0.0))
    variance = property(lambda self: self.mean / (-self.logits).sigmoid())

    def log_prob(self, value: Any) -> Tensor:
        value, count, logits = self._value(value), self.total_count, self.logits
        unnormalized = count * logsigmoid(-logits) + value * logsigmoid(logits)
        normalization = -(count + value).lgamma() + (1.0 + value).lgamma() + count.lgamma()
        return unnormalized - where((count + value).eq(0.0), 0.0, normalization)  # n = k = 0: probability 1

    def sample(self, sample_shape: Any = ()) -> Tensor:
        """A Poisson draw at a Gamma-distributed rate (torch's algorithm), by NumPy: eager only."""
        def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
            counts = np.broadcast_to(self.total_count.numpy(), shape)
            return rng.poisson(rng.gamma(counts, np.broadcast_to(self.logits.exp().numpy(), shape)))

        return numpy_sample(self, sample_shape, draw)


@register_kl(Geometric, Geometric)
def _kl_geometric_geometric(p: Geometric, q: Geometric) -> Tensor:
    return -p.entropy() - (-q.probs).log1p() / p.probs - q.logits


__all__ = ["Geometric", "NegativeBinomial"]
