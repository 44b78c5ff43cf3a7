"""``OneHotCategorical`` and ``OneHotCategoricalStraightThrough``: a ``Categorical`` whose values are one-hot vectors,
as ``torch.distributions``' (DreamerV2's discrete latents: ``OneHotCategorical(logits=...)`` with the straight-through
sample ``sample + probs - probs.detach()``).

```
sample        one_hot(Categorical.sample(), K) in the probabilities' dtype   (no gradient)
rsample (ST)  sample + (probs - probs.detach())   the value of the sample, the gradient of probs
log_prob(x)   Categorical.log_prob(x.max(-1)[1])   (the index of the one)
mode          one_hot(probs.argmax(-1))            mean = probs, variance = probs (1 - probs)
KL(p || q)    the categoricals' (registered for the pair, as PyTorch's)
```

The event is the class vector (``event_shape == (K,)``); ``probs`` and ``logits`` are the categorical's (normalized).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.distributions import Constraint, Distribution, broadcast, constant
from kiln.frontend.distributions_discrete import Categorical
from kiln.frontend.distributions_kl import kl_divergence, register_kl
from kiln.frontend.functional_nn import one_hot as one_hot_of
from kiln.frontend.tensor import Tensor

one_hot = Constraint("a one-hot vector (zeros and a single one)",
                     lambda x: np.all((x == 0) | (x == 1), axis=-1) & (np.sum(x, axis=-1) == 1), event_dim=1,
                     kind="one_hot")
"""``torch.distributions.constraints.one_hot``."""


class OneHotCategorical(Distribution):
    """``OneHotCategorical(probs=p)`` or ``OneHotCategorical(logits=l)`` over the one-hot vectors of the last dim's
    ``K`` classes (the leading dims are the batch)."""

    arg_constraints = Categorical.arg_constraints
    support = one_hot
    has_enumerate_support = True

    def __init__(self, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        self._categorical = Categorical(probs, logits, validate_args)
        super().__init__(self._categorical.batch_shape, self._categorical.param_shape[-1:], validate_args)

    @property
    def dtype(self) -> DType:
        return self._categorical.dtype

    probs = property(lambda self: self._categorical.probs)
    logits = property(lambda self: self._categorical.logits)
    param_shape = property(lambda self: self._categorical.param_shape)
    mean = property(lambda self: self._categorical.probs)
    variance = property(lambda self: self._categorical.probs * (1 - self._categorical.probs))

    @property
    def mode(self) -> Tensor:
        probs = self._categorical.probs
        return one_hot_of(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)

    def expand(self, batch_shape: Any, _instance: Any = None) -> "OneHotCategorical":
        new = type(self).__new__(type(self))
        new._categorical = self._categorical.expand(batch_shape)
        Distribution.__init__(new, new._categorical.batch_shape, self.event_shape, self._validate_args)
        return new

    def sample(self, sample_shape: Any = ()) -> Tensor:
        probs = self._categorical.probs
        return one_hot_of(self._categorical.sample(sample_shape), self.event_shape[0]).to(probs.dtype).detach()

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value)
        return self._categorical.log_prob(value.max(-1)[1])

    def entropy(self) -> Tensor:
        return self._categorical.entropy()

    def enumerate_support(self, expand: bool = True) -> Tensor:
        """The ``K`` one-hot vectors shaped ``(K, 1, ..., K)``, or ``(K, *batch_shape, K)`` with ``expand``."""
        classes = self.event_shape[0]
        values = constant(np.eye(classes).reshape((classes,) + (1,) * len(self.batch_shape) + (classes,)), self.dtype)
        return broadcast(values, (classes,) + self.batch_shape + (classes,)) if expand else values

    def __repr__(self) -> str:
        return type(self).__name__ + repr(self._categorical)[len("Categorical"):]


class OneHotCategoricalStraightThrough(OneHotCategorical):
    """``OneHotCategorical`` with ``rsample``: the one-hot sample, differentiated as ``probs`` (the straight-through
    estimator of Bengio et al. 2013)."""

    has_rsample = True

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        samples = self.sample(sample_shape)
        probs = self._categorical.probs
        return samples + (probs - probs.detach())


@register_kl(OneHotCategorical, OneHotCategorical)
def _kl_one_hot_one_hot(p: OneHotCategorical, q: OneHotCategorical) -> Tensor:
    return kl_divergence(p._categorical, q._categorical)


__all__ = ["OneHotCategorical", "OneHotCategoricalStraightThrough", "one_hot"]
