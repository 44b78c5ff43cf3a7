"""``Multinomial(total_count, probs | logits)``: the class counts of ``total_count`` Categorical draws, as
``torch.distributions.Multinomial`` (values and gradients agree to rounding).

```
log_prob(x)  lgamma(sum x + 1) - sum lgamma(x + 1) + sum x l     (l: normalized logits; x l is 0 where x = 0, l = -inf)
mean         n p                     variance   n p (1 - p)
entropy      n H(Categorical) - lgamma(n + 1) + sum_k sum_{j=1..n} Binomial(n, p_k)(j) lgamma(j + 1)
sample       the n Categorical draws (Gumbel-max, from the step's seed), one-hot and summed: traced
```

``total_count`` is one Python int for the whole batch (torch's: anything else is its NotImplementedError); ``probs``
and ``logits`` are the Categorical's (normalized over the last dim, the event).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.types import Dim
from kiln.frontend.distributions import Constraint, Distribution, as_shape
from kiln.frontend.distributions_counts import Binomial
from kiln.frontend.distributions_discrete import Categorical, _broadcast_pair
from kiln.frontend.distributions_kl import where
from kiln.frontend.functional_nn import one_hot
from kiln.frontend.tensor import Tensor


def multinomial(upper_bound: int) -> Constraint:
    """torch's ``constraints.multinomial(upper_bound)``: non-negative counts whose sum is at most ``upper_bound``."""
    return Constraint(f"a vector of non-negative counts summing to at most {upper_bound}",
                      lambda x: np.all(x >= 0, axis=-1) & (np.sum(x, axis=-1) <= upper_bound), event_dim=1)


class Multinomial(Distribution):
    """``Multinomial(total_count=n, probs=p)`` or ``(total_count=n, logits=l)`` over count vectors of the last dim's
    ``K`` classes (the leading dims are the batch)."""

    arg_constraints = Categorical.arg_constraints

    def __init__(self, total_count: int = 1, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        if not isinstance(total_count, (int, np.integer)):
            raise NotImplementedError(f"inhomogeneous total_count is not supported: Multinomial takes one Python int "
                                      f"for the whole batch (as torch's), got {type(total_count).__name__}")
        self.total_count = int(total_count)
        self._categorical = Categorical(probs, logits, validate_args)
        super().__init__(self._categorical.batch_shape, self._categorical.param_shape[-1:], validate_args)
        self._dtype = self._categorical.dtype

    probs = property(lambda self: self._categorical.probs)
    logits = property(lambda self: self._categorical.logits)
    param_shape = property(lambda self: self._categorical.param_shape)
    mean = property(lambda self: self.probs * self.total_count)
    variance = property(lambda self: self.total_count * self.probs * (1 - self.probs))

    @property
    def support(self) -> Constraint:  # type: ignore[override]
        return multinomial(self.total_count)

    def expand(self, batch_shape: Sequence[Dim], _instance: Any = None) -> "Multinomial":
        new = copy.copy(self)
        new._categorical = self._categorical.expand(batch_shape)
        new._batch_shape = new._categorical.batch_shape
        return new

    def sample(self, sample_shape: Any = ()) -> Tensor:
        """Counts shaped ``sample_shape + batch_shape + (K,)`` in the probabilities' dtype, with no gradient."""
        shape = as_shape(sample_shape, "Multinomial.sample")
        draws = self._categorical.sample((self.total_count,) + shape)
        counts = one_hot(draws, self.event_shape[0], dtype=self.dtype).sum(0)
        return counts.detach()

    def log_prob(self, value: Any) -> Tensor:
        logits, value = _broadcast_pair(self.logits, self._value(value))
        log_factorial_n = (value.sum(-1) + 1).lgamma()
        log_factorial_xs = (value + 1).lgamma().sum(-1)
        logits = where(value.eq(0.0) & logits.eq(-math.inf), 0.0, logits)
        return log_factorial_n - log_factorial_xs + (logits * value).sum(-1)

    def entropy(self) -> Tensor:
        count = self.total_count
        first = count * self._categorical.entropy() - math.lgamma(count + 1)
        binomial = Binomial(count, probs=self.probs, validate_args=False)
        support = binomial.enumerate_support(expand=False)[1:]
        weights = (support + 1).lgamma()
        return first + (binomial.log_prob(support).exp() * weights).sum((0, -1))

    def __repr__(self) -> str:
        return f"Multinomial(total_count: {self.total_count}, {repr(self._categorical)[len('Categorical('):]}"


__all__ = ["Multinomial"]
