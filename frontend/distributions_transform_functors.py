"""``torch.distributions.transforms``' functors: transforms that apply other transforms over more dims or along one.

```
functor                                   y                                  log |det dy/dx|
IndependentTransform(t, n)                t(x)                               t's, summed over n more rightmost dims
CatTransform([t_i], dim, lengths)         cat(t_i(x narrowed to lengths_i))   each t_i's, concatenated along dim
                                                                             (summed when dim is inside the event)
StackTransform([t_i], dim)                stack(t_i(x.select(dim, i)))       each t_i's, stacked along dim
```

Their domains and codomains are torch's ``constraints.independent``, ``constraints.cat`` and ``constraints.stack`` of
the parts' (``cat_constraint`` and ``stack_constraint`` here check an array piece by piece); a wrong length along
``dim`` is torch's ``AssertionError``. Each is equal only to itself, as torch's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.types import Dim
from kiln.frontend.distributions import Constraint, sum_rightmost
from kiln.frontend.distributions_transforms import Transform, independent
from kiln.frontend.distributions_transforms_more import no_sign, too_few_dims
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_functions import cat, stack


def cat_constraint(parts: Sequence[Constraint], dim: int, lengths: Sequence[int]) -> Constraint:
    """torch's ``constraints.cat``: ``parts[i]`` holds on the ``i``-th piece of ``lengths[i]`` along ``dim``."""
    def check(value: Any) -> np.ndarray:
        value, pieces, start = np.asarray(value), [], 0
        for part, length in zip(parts, lengths):
            pieces.append(np.asarray(part.check(np.take(value, range(start, start + length), axis=dim))))
            start += length
        return np.concatenate(pieces, axis=dim)

    return Constraint("each piece along dim in its part's set", check, max(part.event_dim for part in parts))


def stack_constraint(parts: Sequence[Constraint], dim: int) -> Constraint:
    """torch's ``constraints.stack``: ``parts[i]`` holds on ``value.select(dim, i)``."""
    def check(value: Any) -> np.ndarray:
        value = np.asarray(value)
        return np.stack([part.check(np.take(value, i, axis=dim)) for i, part in enumerate(parts)], axis=dim)

    event_dim = max(part.event_dim for part in parts)
    return Constraint("each slice along dim in its part's set", check, event_dim + (1 if dim + event_dim < 0 else 0))


class _Functor(Transform):
    """A transform built of others: bijective when they all are; equal only to itself (torch defines no ``__eq__``)."""

    transforms: list[Transform]
    sign = property(no_sign)  # type: ignore[assignment]

    @property
    def bijective(self) -> bool:  # type: ignore[override]
        return all(transform.bijective for transform in self.transforms)

    def _parameters(self) -> tuple[Any, ...]:
        return (id(self),)


class IndependentTransform(_Functor):
    """``base_transform`` with ``reinterpreted_batch_ndims`` more rightmost dims read as one event: the same map, its
    log-determinant summed over them."""

    def __init__(self, base_transform: Transform, reinterpreted_batch_ndims: int, cache_size: int = 0):
        super().__init__(cache_size)
        self.base_transform = base_transform.with_cache(cache_size)
        self.reinterpreted_batch_ndims = reinterpreted_batch_ndims
        self.transforms = [self.base_transform]

    domain = property(lambda self: independent(self.base_transform.domain, self.reinterpreted_batch_ndims))  # type: ignore[assignment]
    codomain = property(lambda self: independent(self.base_transform.codomain, self.reinterpreted_batch_ndims))  # type: ignore[assignment]
    sign = property(lambda self: self.base_transform.sign)  # type: ignore[assignment]

    def with_cache(self, cache_size: int = 1) -> "IndependentTransform":
        if cache_size == self._cache_size:
            return self
        return IndependentTransform(self.base_transform, self.reinterpreted_batch_ndims, cache_size)

    def _call(self, x: Tensor) -> Tensor:
        too_few_dims(tuple(x.shape), self.domain.event_dim)
        return self.base_transform(x)

    def _inverse(self, y: Tensor) -> Tensor:
        too_few_dims(tuple(y.shape), self.codomain.event_dim)
        return self.base_transform.inv(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return sum_rightmost(self.base_transform.log_abs_det_jacobian(x, y), self.reinterpreted_batch_ndims)

    def forward_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        return self.base_transform.forward_shape(shape)

    def inverse_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        return self.base_transform.inverse_shape(shape)

    def __repr__(self) -> str:
        return f"IndependentTransform({self.base_transform!r}, {self.reinterpreted_batch_ndims})"


def _parts(transforms: Sequence[Transform], cache_size: int) -> list[Transform]:
    if not all(isinstance(transform, Transform) for transform in transforms):
        raise AssertionError("All elements of tseq must be Transform instances")
    return [transform.with_cache(cache_size) for transform in transforms] if cache_size else list(transforms)


def _check_dim(value: Tensor, dim: int, size: int, name: str, what: str) -> None:
    """torch's ``AssertionError``s: ``dim`` inside ``value``'s dims, and ``value.size(dim) == size``."""
    if not -len(value.shape) <= dim < len(value.shape):
        raise AssertionError(f"dim {dim} out of range for {name} with {len(value.shape)} dimensions")
    if value.shape[dim] != size:
        raise AssertionError(f"{name}.size({dim}) = {value.shape[dim]} must equal {what} {size}")


class CatTransform(_Functor):
    """``transforms[i]`` applied to the ``i``-th piece of ``lengths[i]`` (1 each by default) along ``dim``, the
    results concatenated, as ``torch.cat``."""

    def __init__(self, tseq: Sequence[Transform], dim: int = 0, lengths: Sequence[int] | None = None, cache_size: int = 0):
        self.transforms = _parts(tseq, cache_size)
        super().__init__(cache_size)
        self.lengths = [1] * len(self.transforms) if lengths is None else list(lengths)
        if len(self.lengths) != len(self.transforms):
            raise AssertionError(f"lengths ({len(self.lengths)}) must match transforms ({len(self.transforms)})")
        self.dim = dim

    event_dim = property(lambda self: max(transform.event_dim for transform in self.transforms))  # type: ignore[assignment]
    length = property(lambda self: sum(self.lengths))

    @property
    def domain(self) -> Constraint:  # type: ignore[override]
        return cat_constraint([t.domain for t in self.transforms], self.dim, self.lengths)

    @property
    def codomain(self) -> Constraint:  # type: ignore[override]
        return cat_constraint([t.codomain for t in self.transforms], self.dim, self.lengths)

    def with_cache(self, cache_size: int = 1) -> "CatTransform":
        return self if cache_size == self._cache_size else CatTransform(self.transforms, self.dim, self.lengths, cache_size)

    def _pieces(self, value: Tensor, name: str) -> list[Tensor]:
        _check_dim(value, self.dim, self.length, name, "length")
        starts = np.cumsum([0] + self.lengths[:-1])
        return [value.narrow(self.dim, int(start), length) for start, length in zip(starts, self.lengths)]

    def _call(self, x: Tensor) -> Tensor:
        return cat([t(piece) for t, piece in zip(self.transforms, self._pieces(x, "tensor"))], self.dim)

    def _inverse(self, y: Tensor) -> Tensor:
        return cat([t.inv(piece) for t, piece in zip(self.transforms, self._pieces(y, "tensor"))], self.dim)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        terms = [sum_rightmost(t.log_abs_det_jacobian(xs, ys), self.event_dim - t.event_dim)
                 for t, xs, ys in zip(self.transforms, self._pieces(x, "x"), self._pieces(y, "y"))]
        dim = (self.dim - len(x.shape) if self.dim >= 0 else self.dim) + self.event_dim
        return cat(terms, dim) if dim < 0 else sum(terms[1:], terms[0])  # dim inside the event: summed over it


class StackTransform(_Functor):
    """``transforms[i]`` applied to ``x.select(dim, i)``, the results stacked along ``dim``, as ``torch.stack``."""

    def __init__(self, tseq: Sequence[Transform], dim: int = 0, cache_size: int = 0):
        self.transforms = _parts(tseq, cache_size)
        super().__init__(cache_size)
        self.dim = dim

    domain = property(lambda self: stack_constraint([t.domain for t in self.transforms], self.dim))  # type: ignore[assignment]
    codomain = property(lambda self: stack_constraint([t.codomain for t in self.transforms], self.dim))  # type: ignore[assignment]

    def with_cache(self, cache_size: int = 1) -> "StackTransform":
        return self if cache_size == self._cache_size else StackTransform(self.transforms, self.dim, cache_size)

    def _slices(self, value: Tensor, name: str) -> list[Tensor]:
        _check_dim(value, self.dim, len(self.transforms), name, "len(transforms)")
        return [value.select(self.dim, i) for i in range(len(self.transforms))]

    def _call(self, x: Tensor) -> Tensor:
        return stack([t(piece) for t, piece in zip(self.transforms, self._slices(x, "x"))], self.dim)

    def _inverse(self, y: Tensor) -> Tensor:
        return stack([t.inv(piece) for t, piece in zip(self.transforms, self._slices(y, "y"))], self.dim)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return stack([t.log_abs_det_jacobian(xs, ys)
                      for t, xs, ys in zip(self.transforms, self._slices(x, "x"), self._slices(y, "y"))], self.dim)


__all__ = ["CatTransform", "IndependentTransform", "StackTransform", "cat_constraint", "stack_constraint"]
