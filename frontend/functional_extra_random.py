"""``F.alpha_dropout``, ``F.feature_alpha_dropout`` and ``F.gumbel_softmax``: PyTorch's formulas on uniform draws
(``tensor.random_uniform``) from the traced step's seed, as ``F.dropout`` and ``F.rrelu`` draw (the numbers are kiln's,
not PyTorch's; their statistics are PyTorch's).

```
alpha_dropout(x)    keep ~ Bernoulli(1 - p);  a = 1 / sqrt((alpha'^2 p + 1)(1 - p)),  alpha' = SELU's scale * alpha
                    y = a x + alpha' a p where kept, alpha' a (p - 1) where dropped   (mean 0 and variance 1 stay so)
gumbel_softmax(l)   softmax((l + g) / tau) with g = -log(-log(1 - u)), u ~ U[0, 1);  hard: one_hot(argmax) - stop(y) + y
```
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import ml_dtypes
import numpy as np

from kiln.frontend.functional_activation import SELU_ALPHA, SELU_SCALE
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import TraceContext, located_error
from kiln.frontend.tensor_inplace import honors_inplace

ALPHA_PRIME = SELU_ALPHA * SELU_SCALE
"""SELU's negative saturation value, ``-scale * alpha``, negated: where alpha dropout sends the dropped elements before
the affine correction (PyTorch's 1.7580993408473766)."""


def _uniform(like: Tensor, dtype) -> Tensor:
    """U[0, 1) shaped as ``like``, from the traced graph's ``rng_seed`` (a fresh stream per draw)."""
    seed, stream = TraceContext.current().random_seed()
    return apply("tensor.random_uniform", Tensor(seed), like, dtype=dtype, stream=stream)


# Alpha dropout -------------------------------------------------------------------------------------------------------


@honors_inplace
def alpha_dropout(input: Tensor, p: float = 0.5, training: bool = False, inplace: bool = False) -> Tensor:
    """Dropout for SELU networks: each element dropped with probability ``p`` to SELU's saturation value, then an affine
    map restores mean 0 and variance 1 of a normalized input; the identity unless training with ``p > 0``."""
    return _alpha_dropout("alpha_dropout", input, p, training, lambda: input)


@honors_inplace
def feature_alpha_dropout(input: Tensor, p: float = 0.5, training: bool = False, inplace: bool = False) -> Tensor:
    """``alpha_dropout`` with one draw per channel of ``(N, C, *)``: whole channels are dropped together."""
    if input.ndim < 2:
        raise located_error(f"feature_alpha_dropout: Feature dropout requires at least 2 dimensions in the input, got {input.type}")
    return _alpha_dropout("feature_alpha_dropout", input, p, training, lambda: _channels_of(input))


def _channels_of(input: Tensor) -> Tensor:
    """Ones shaped ``(N, C, 1, ...)``: what a per-channel draw is shaped as."""
    ones = apply("tensor.constant", value=np.ones((1,) * input.ndim, input.dtype.numpy))
    return apply("tensor.broadcast_to", ones, shape=tuple(input.shape[:2]) + (1,) * (input.ndim - 2))


def _alpha_dropout(function: str, input: Tensor, p: float, training: bool, like) -> Tensor:
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")  # PyTorch's error and words
    if not training or p == 0:
        return input
    if not input.dtype.is_float:
        raise located_error(f"{function} needs a floating-point input, got {input.type}")
    if p == 1:
        return input * 0.0
    keep = (_uniform(like(), input.dtype) < 1.0 - p).to(input.dtype)
    a = 1.0 / math.sqrt((ALPHA_PRIME * ALPHA_PRIME * p + 1) * (1 - p))
    return input * (keep * a) + (keep - 1.0) * (ALPHA_PRIME * a) + ALPHA_PRIME * a * p


# Gumbel-softmax -------------------------------------------------------------------------------------------------------


def gumbel_softmax(logits: Tensor, tau: float = 1.0, hard: bool = False, eps: float = 1e-10, dim: int = -1) -> Tensor:
    """A sample of the Gumbel-softmax (concrete) distribution over ``dim``: ``softmax((logits + g) / tau)`` with Gumbel
    noise ``g``. ``hard`` returns the one-hot of its argmax in value with the soft sample's gradient (straight through),
    as PyTorch. ``eps`` is unused (deprecated in PyTorch too)."""
    if eps != 1e-10:
        warnings.warn("`eps` parameter is deprecated and has no effect.", stacklevel=2)
    if not logits.dtype.is_float or logits.ndim == 0:
        raise located_error(f"gumbel_softmax needs floating-point logits with at least one dim, got {logits.type}")
    tiny = float(ml_dtypes.finfo(logits.dtype.numpy).tiny)
    exponential = -(1.0 - _uniform(logits, logits.dtype)).log()
    gumbels = -exponential.clamp(min=tiny).log()  # 1 - u > 0, so only u = 0 gives 0 here, which the clamp keeps finite
    soft = apply("nn.softmax", (logits + gumbels) / tau, axis=dim)
    if not hard:
        return soft
    axis = dim % logits.ndim
    if not isinstance(logits.shape[axis], int):
        raise located_error(f"gumbel_softmax(hard=True) needs a static dim {dim}, got {logits.type}")
    positions = np.arange(logits.shape[axis]).reshape((-1,) + (1,) * (logits.ndim - 1 - axis))
    one_hot = soft.argmax(axis, keepdim=True).eq(apply("tensor.constant", value=positions)).to(soft.dtype)
    return one_hot - soft.detach() + soft


__all__: Sequence[str] = ["alpha_dropout", "feature_alpha_dropout", "gumbel_softmax"]
