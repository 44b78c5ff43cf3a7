"""The discrete families of ``kiln.distributions``: ``Bernoulli`` and ``Categorical``, each from ``probs`` or
``logits`` (not both), with PyTorch's formulas: the other parameterization is derived as PyTorch derives it (logits
from probabilities clamped to ``[eps, 1 - eps]``), so values and gradients agree with ``torch.distributions``.

```
Bernoulli     log_prob(x) = -bce_with_logits(logits, x)        entropy = bce_with_logits(logits, probs)
              sample      = [u < probs],  u ~ U[0, 1)
Categorical   log_prob(k) = logits[k] (logits normalized by logsumexp)   entropy = -sum(probs logits)
              sample      = argmax(logits + g),  g = -log(-log(1 - u)): the Gumbel-max trick
```

Neither has ``rsample``: gradients of an expectation over their samples need a score-function (REINFORCE) estimator,
``-(dist.log_prob(action) * advantage).mean()``, or a relaxation (``F.gumbel_softmax``).
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from kiln.compiler.ir.types import DType, broadcast_shapes
from kiln.frontend.distributions import (Constraint, Distribution, boolean, invalid_parameter, broadcast, constant,
                                         real, real_vector, unit_interval, unnormalized_simplex)
from kiln.frontend.functional_losses import binary_cross_entropy_with_logits
from kiln.frontend.tensor import Tensor, apply


def _one_of(name: str, probs: Any, logits: Any) -> dict[str, Any]:
    if (probs is None) == (logits is None):
        raise invalid_parameter(f"{name}: Either `probs` or `logits` must be specified, but not both "
                                    f"(got {'both' if probs is not None else 'neither'})")
    return {"probs": probs} if probs is not None else {"logits": logits}


def clamp_probs(probs: Tensor) -> Tensor:
    """Probabilities clamped to ``[eps, 1 - eps]`` (the dtype's machine epsilon), as PyTorch's ``clamp_probs``."""
    eps = float(ml_dtypes.finfo(probs.dtype.numpy).eps)
    return probs.clamp(min=eps, max=1 - eps)


class BinaryProbabilities:
    """``probs`` and ``logits`` of a family given either: a success probability ``p`` or its log-odds ``l``, each
    derived from the other on first use (``p = sigmoid(l)``, ``l = logit(clamp_probs(p))``)."""

    @property
    def probs(self) -> Tensor:
        if "probs" in self._raw:
            return self._parameter("probs")
        return self._traced("probs", lambda: self.logits.sigmoid())

    @property
    def logits(self) -> Tensor:
        if "logits" in self._raw:
            return self._parameter("logits")
        return self._traced("logits", lambda: _binary_logits(clamp_probs(self.probs)))


class Bernoulli(BinaryProbabilities, Distribution):
    """``Bernoulli(probs=p)`` or ``Bernoulli(logits=l)``: 1 with probability ``p = sigmoid(l)``, else 0 (as floats)."""

    arg_constraints = {"probs": unit_interval, "logits": real}
    support = boolean
    has_enumerate_support = True

    def __init__(self, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        self._set_parameters(validate_args, **_one_of("Bernoulli", probs, logits))

    @property
    def param_shape(self) -> tuple:
        return self.batch_shape

    mean = property(lambda self: self.probs)
    variance = property(lambda self: self.probs * (1 - self.probs))

    @property
    def mode(self) -> Tensor:
        """1 where ``probs > 1/2``, 0 below, NaN at exactly 1/2 (as PyTorch)."""
        probs = self.probs
        mode = (probs >= 0.5).to(self.dtype)
        return apply("tensor.where", probs.eq(0.5), mode * math.nan, mode)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        return (self._uniform(self._extended_shape(sample_shape)) < self.probs.detach()).to(self.dtype)

    def log_prob(self, value: Any) -> Tensor:
        logits, value = _broadcast_pair(self.logits, self._value(value))
        return -binary_cross_entropy_with_logits(logits, value, reduction="none")

    def entropy(self) -> Tensor:
        return binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none")

    def enumerate_support(self, expand: bool = True) -> Tensor:
        """``[0, 1]`` shaped ``(2, 1, ...)``, or ``(2, *batch_shape)`` with ``expand``."""
        values = constant(np.arange(2).reshape((-1,) + (1,) * len(self.batch_shape)), self.dtype)
        return broadcast(values, (2,) + self.batch_shape) if expand else values


def _binary_logits(probs: Tensor) -> Tensor:
    return probs.log() - (-probs).log1p()


def _broadcast_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    shape = broadcast_shapes(tuple(a.shape), tuple(b.shape))
    return broadcast(a, shape), broadcast(b.to(a.dtype) if b.dtype is not a.dtype else b, shape)


class Categorical(Distribution):
    """``Categorical(probs=p)`` or ``Categorical(logits=l)`` over the classes ``0 .. K-1`` of the last dim (the
    leading dims are the batch); ``probs`` are normalized to sum to 1 and ``logits`` by their ``logsumexp``, as
    PyTorch's. Samples and ``log_prob``'s values are int64 class indices."""

    arg_constraints = {"probs": unnormalized_simplex, "logits": real_vector}
    event_dims = {"probs": 1, "logits": 1}
    has_enumerate_support = True

    def __init__(self, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        self._set_parameters(validate_args, **_one_of("Categorical", probs, logits))
        (raw,) = self._raw.values()
        self._num_events = raw.shape[-1]

    @property
    def probs(self) -> Tensor:
        if "probs" in self._raw:
            return self._traced("probs", lambda: (lambda p: p / p.sum(-1, keepdim=True))(self._parameter("probs")))
        return self._traced("probs", lambda: self.logits.softmax(-1))

    @property
    def logits(self) -> Tensor:
        if "logits" in self._raw:
            return self._traced("logits", lambda: (lambda l: l - l.logsumexp(-1, keepdim=True))(self._parameter("logits")))
        return self._traced("logits", lambda: clamp_probs(self.probs).log())

    @property
    def param_shape(self) -> tuple:
        return self.batch_shape + (self._num_events,)

    @property
    def support(self) -> Constraint:  # type: ignore[override]
        high = self._num_events - 1
        return Constraint(f"a class index, an integer in [0, {high}]", lambda x: (x >= 0) & (x <= high) & (x == np.floor(x)))

    @property
    def mean(self) -> Tensor:
        """NaN (a class index has no mean), shaped as the batch, as PyTorch's."""
        self._context("mean")
        return broadcast(constant(math.nan, self.dtype), self.batch_shape)

    variance = mean
    mode = property(lambda self: self.probs.argmax(-1))

    def sample(self, sample_shape: Any = ()) -> Tensor:
        logits = self.logits.detach()
        uniform = self._uniform(self._extended_shape(sample_shape) + (self._num_events,))
        tiny = float(ml_dtypes.finfo(self.dtype.numpy).tiny)
        gumbel = -(-(1.0 - uniform).log()).clamp(min=tiny).log()  # -log(E), E = -log(1 - u) exponential; E = 0 only at u = 0
        return (logits + gumbel).argmax(-1)

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value, dtype=DType.i64)
        value = (value if value.dtype is DType.i64 else value.long()).unsqueeze(-1)
        logits = self.logits
        batch = broadcast_shapes(tuple(value.shape[:-1]), tuple(logits.shape[:-1]))
        indices = broadcast(value, batch + (1,))
        return broadcast(logits, batch + (self._num_events,)).gather(-1, indices).squeeze(-1)

    def entropy(self) -> Tensor:
        lowest = float(ml_dtypes.finfo(self.dtype.numpy).min)
        return -(self.logits.clamp(min=lowest) * self.probs).sum(-1)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        """The class indices ``0 .. K-1`` shaped ``(K, 1, ...)``, or ``(K, *batch_shape)`` with ``expand``."""
        values = constant(np.arange(self._num_events).reshape((-1,) + (1,) * len(self.batch_shape)), DType.i64)
        return broadcast(values, (self._num_events,) + self.batch_shape) if expand else values


__all__ = ["Bernoulli", "Categorical"]
