"""``torch.distributions.transforms``' maps onto the simplex, through a cdf and between shapes, with torch's
formulas (values and gradients agree with ``torch.distributions``), domains, codomains, ``bijective`` flags and signs.

```
transform                 y = t(x)                                          log |det dy/dx|
AbsTransform              |x|                                               (none: not bijective)
SoftmaxTransform          exp(x - max x) / sum exp(x - max x)               (none: not bijective)
StickBreakingTransform    z = clipped_sigmoid(x_i - log(K - i)), i < K:     sum_i -x'_i + logsigmoid(x'_i) + log y_i,
                          y_i = z_i prod_{j<i} (1 - z_j), y_K = prod (1 - z)  x' = x - log(K - i)
CumulativeDistribution-   distribution.cdf(x)                               distribution.log_prob(x)
  Transform(distribution)
ReshapeTransform          x reshaped from in_shape to out_shape             0
```

``StickBreakingTransform`` maps ``K`` reals onto the ``K + 1`` simplex (``LogisticNormal``'s transform); its inverse
clamps the remaining stick at the dtype's smallest normal number, as torch's. A transform torch gives no ``sign``
(all here but ``CumulativeDistributionTransform``, whose sign is +1) raises ``NotImplementedError`` when asked, as
torch's. The
functors that apply transforms along dims (``IndependentTransform``, ``CatTransform``, ``StackTransform``) are in
``distributions_transform_functors.py``, the maps onto matrices (``LowerCholeskyTransform``,
``PositiveDefiniteTransform``, ``CorrCholeskyTransform``) in ``distributions_transforms_cholesky.py``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.types import Dim
from kiln.frontend.distributions import broadcast, constant, positive, real, real_vector, unit_interval
from kiln.frontend.distributions_dirichlet import simplex
from kiln.frontend.distributions_transforms import SigmoidTransform, Transform, independent
from kiln.frontend.functional_activation import logsigmoid
from kiln.frontend.functional_movement import pad
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_dtypes import finfo

_clipped_sigmoid = SigmoidTransform()
"""torch's ``_clipped_sigmoid``: ``sigmoid`` clamped into ``[tiny, 1 - eps]``."""


def no_sign(transform: Transform) -> Any:
    """torch's ``Transform.sign`` for a map that has none."""
    raise NotImplementedError(f"{type(transform).__name__} has no sign (as in torch.distributions: it is not a monotone "
                              "map of one number)")


def too_few_dims(shape: Sequence[Dim], needed: int) -> None:
    if len(shape) < needed:
        raise ValueError("Too few dimensions on input")


class AbsTransform(Transform):
    """``y = |x|``: not bijective (``inv`` is the identity on ``y >= 0``), so no log-determinant."""

    domain = real
    codomain = positive
    bijective = False
    sign = property(no_sign)  # type: ignore[assignment]

    def with_cache(self, cache_size: int = 1) -> "AbsTransform":
        return self if cache_size == self._cache_size else AbsTransform(cache_size)

    def _call(self, x: Tensor) -> Tensor:
        return x.abs()

    def _inverse(self, y: Tensor) -> Tensor:
        return y


class SoftmaxTransform(Transform):
    """``y = softmax(x)`` over the last dim, onto the simplex; ``inv`` is ``log y`` (one of the many preimages), so not
    bijective and no log-determinant (torch's note: fit for coordinate-wise optimization, not for HMC)."""

    domain = real_vector
    codomain = simplex
    bijective = False
    sign = property(no_sign)  # type: ignore[assignment]

    def with_cache(self, cache_size: int = 1) -> "SoftmaxTransform":
        return self if cache_size == self._cache_size else SoftmaxTransform(cache_size)

    def _call(self, x: Tensor) -> Tensor:
        probs = (x - x.amax(-1, keepdim=True)).exp()
        return probs / probs.sum(-1, keepdim=True)

    def _inverse(self, y: Tensor) -> Tensor:
        return y.log()

    def forward_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        too_few_dims(shape, 1)
        return tuple(shape)

    inverse_shape = forward_shape


def _log_offsets(like: Tensor, length: int) -> Tensor:
    """``log(length - i)`` for ``i < length``: the shift that centres stick-breaking at the uniform point."""
    return constant(np.log(np.arange(length, 0, -1, dtype=np.float64)), like.dtype)


class StickBreakingTransform(Transform):
    """``K`` reals onto the simplex of ``K + 1`` by breaking a unit stick (the module docstring's formula): bijective,
    the map ``LogisticNormal`` pushes its ``Normal`` through."""

    domain = real_vector
    codomain = simplex
    bijective = True
    sign = property(no_sign)  # type: ignore[assignment]

    def with_cache(self, cache_size: int = 1) -> "StickBreakingTransform":
        return self if cache_size == self._cache_size else StickBreakingTransform(cache_size)

    def _call(self, x: Tensor) -> Tensor:
        z = _clipped_sigmoid(x - _log_offsets(x, x.shape[-1]))
        remaining = (1 - z).cumprod(-1)
        return pad(z, [0, 1], value=1.0) * pad(remaining, [1, 0], value=1.0)

    def _inverse(self, y: Tensor) -> Tensor:
        length = y.shape[-1] - 1
        crop = y.narrow(-1, 0, length)
        remaining = (1 - crop.cumsum(-1)).clamp(min=finfo.of(y.dtype).tiny)  # torch's clamp: y_K ~ 0 rounds it below 0
        return crop.log() - remaining.log() + _log_offsets(y, length)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        shifted = x - _log_offsets(x, x.shape[-1])
        return (-shifted + logsigmoid(shifted) + y.narrow(-1, 0, x.shape[-1]).log()).sum(-1)  # 1 - s(x) = e^-x s(x)

    def forward_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        too_few_dims(shape, 1)
        return tuple(shape[:-1]) + (shape[-1] + 1,)

    def inverse_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        too_few_dims(shape, 1)
        return tuple(shape[:-1]) + (shape[-1] - 1,)


class CumulativeDistributionTransform(Transform):
    """``y = distribution.cdf(x)`` onto ``[0, 1]``; ``inv`` is its ``icdf``, ``log |dy/dx|`` its ``log_prob`` (a
    copula's marginals: ``TransformedDistribution(MultivariateNormal(...), [CumulativeDistributionTransform(Normal(0, 1))])``)."""

    bijective = True
    codomain = unit_interval
    sign = 1

    def __init__(self, distribution: Any, cache_size: int = 0):
        super().__init__(cache_size)
        self.distribution = distribution

    domain = property(lambda self: self.distribution.support)  # type: ignore[assignment]

    def with_cache(self, cache_size: int = 1) -> "CumulativeDistributionTransform":
        return self if cache_size == self._cache_size else CumulativeDistributionTransform(self.distribution, cache_size)

    def _parameters(self) -> tuple[Any, ...]:
        return (id(self),)

    def _call(self, x: Tensor) -> Tensor:
        return self.distribution.cdf(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.distribution.icdf(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.distribution.log_prob(x)


class ReshapeTransform(Transform):
    """The rightmost ``in_shape`` dims reshaped to ``out_shape`` (the same number of elements); the Jacobian is 1.
    Equal only to itself, as torch's."""

    bijective = True
    sign = property(no_sign)  # type: ignore[assignment]

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], cache_size: int = 0):
        self.in_shape, self.out_shape = tuple(int(d) for d in in_shape), tuple(int(d) for d in out_shape)
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise ValueError("in_shape, out_shape have different numbers of elements")
        super().__init__(cache_size)

    domain = property(lambda self: independent(real, len(self.in_shape)))  # type: ignore[assignment]
    codomain = property(lambda self: independent(real, len(self.out_shape)))  # type: ignore[assignment]

    def with_cache(self, cache_size: int = 1) -> "ReshapeTransform":
        return self if cache_size == self._cache_size else ReshapeTransform(self.in_shape, self.out_shape, cache_size)

    def _parameters(self) -> tuple[Any, ...]:
        return (id(self),)

    def _call(self, x: Tensor) -> Tensor:
        return x.reshape(tuple(x.shape[: len(x.shape) - len(self.in_shape)]) + self.out_shape)

    def _inverse(self, y: Tensor) -> Tensor:
        return y.reshape(tuple(y.shape[: len(y.shape) - len(self.out_shape)]) + self.in_shape)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return broadcast(constant(0.0, x.dtype), tuple(x.shape[: len(x.shape) - len(self.in_shape)]))

    def forward_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        return _replace_event(tuple(shape), self.in_shape, self.out_shape)

    def inverse_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        return _replace_event(tuple(shape), self.out_shape, self.in_shape)

    def __repr__(self) -> str:
        return f"ReshapeTransform({self.in_shape}, {self.out_shape})"


def _replace_event(shape: tuple[Dim, ...], old: tuple[int, ...], new: tuple[int, ...]) -> tuple[Dim, ...]:
    """``shape`` with its rightmost ``old`` dims replaced by ``new``; torch's ``ValueError``s when they are not ``old``."""
    too_few_dims(shape, len(old))
    cut = len(shape) - len(old)
    if shape[cut:] != old:
        raise ValueError(f"Shape mismatch: expected {shape[cut:]} but got {old}")
    return shape[:cut] + new


__all__ = ["AbsTransform", "CumulativeDistributionTransform", "ReshapeTransform", "SoftmaxTransform", "StickBreakingTransform"]
