"""The scatter family of PyTorch's ``Tensor`` methods, as GNN code uses it: ``scatter`` (``src`` or ``value``,
``reduce="add"|"multiply"``), ``scatter_add``, ``index_add``/``index_fill``/``index_copy``, ``masked_scatter`` and
``nonzero_static``; ``Tensor`` inherits them through ``ExtraMethods`` (``tensor_extras.py``, which also generates their
in-place ``_`` forms).

Scatter writes. A static-shaped scatter is one ``tensor.scatter_add`` into the flattened tensor at ``index * stride +
offset`` (its gradient a ``take``); with a symbolic dim, a one-hot sum over the indexed dim (which must be static).
``scatter_add``/``index_add`` accumulate duplicate indices, as PyTorch's. For the assigning ``scatter``/``index_copy``
PyTorch leaves duplicates unspecified; kiln writes their mean (truncated toward zero for integers), so equal values
written twice give that value; ``scatter(dim, index, value)`` writes ``value`` exactly, duplicates or not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType
from kiln.frontend.autocast import autocasts
from kiln.frontend.tensor_methods import _is_one
from kiln.frontend.tensor_mixin_ops import _apply, _constant, _is_tensor, _where
from kiln.frontend.tensor_shape_extras import _static_shape
from kiln.frontend.index_bounds_checks import check_index_values
from kiln.frontend.mask_dtype_checks import check_bool_mask
from kiln.frontend.trace import located_error


class ScatterMethods:
    """The scatter family; see the module docstring."""

    def scatter_add(self, dim: int, index: Any, src: Any) -> Any:
        """``self[index[i][j]][j] += src[i][j]`` for ``dim = 0`` (PyTorch's); duplicate indices accumulate."""
        same_dtype("scatter_add", self, src)
        index = check_index_values(index, dim % self.ndim, self.shape[dim])
        return self + _scattered_sum(self, dim, index, _source(self, index, src))

    def scatter(self, dim: int, index: Any, src: Any = None, value: Any = None, *, reduce: str | None = None) -> Any:
        """``self[index[i][j]][j] = src[i][j]`` (or ``value``) for ``dim = 0``; ``reduce="add"`` or ``"multiply"``
        combines with what is there. Duplicate indices: see the module docstring."""
        source = value if src is None else src
        same_dtype("scatter", self, src)
        index = check_index_values(index, dim % self.ndim, self.shape[dim])
        if reduce is None:
            return _scatter_assign(self, dim, index, source)
        if reduce == "add":
            return self.scatter_add(dim, index, _source(self, index, source))
        if reduce == "multiply":
            return self * _one_hot_scatter(self, dim, index, _source(self, index, source), "prod")
        raise located_error(f"scatter: reduce must be None, 'add' or 'multiply', got {reduce!r}")

    def index_add(self, dim: int, index: Any, source: Any, *, alpha: Any = 1) -> Any:
        """``self[..., index[i], ...] += alpha * source[..., i, ...]`` along ``dim``; duplicate indices accumulate."""
        same_dtype("index_add", self, source)
        scaled = source if _is_one(alpha) else source * alpha
        return self + _index_sum(self, dim, _vector_index("index_add", index), scaled.to(self.dtype))

    def index_fill(self, dim: int, index: Any, value: Any) -> Any:
        """``value`` in the slices ``index`` along ``dim``."""
        written = _index_counts(self, dim, _vector_index("index_fill", index), DType.i64) > 0
        return self.masked_fill(written, value)

    @autocasts("index_copy")
    def index_copy(self, dim: int, index: Any, source: Any) -> Any:
        """The slices of ``source`` into the slices ``index`` along ``dim`` (duplicates: their mean)."""
        index = _vector_index("index_copy", index)
        counts = _index_counts(self, dim, index, _count_dtype(self))
        return _where(counts > 0, _mean_of_writes(_index_sum(self, dim, index, source.to(self.dtype)), counts), self)

    def masked_scatter(self, mask: Any, source: Any) -> Any:
        """``source``'s elements in order into the places where ``mask`` (broadcast to this tensor) is True: the k-th
        True place takes ``source.flatten()[k]``, a ``take`` at the running count of the mask."""
        check_bool_mask(mask, "masked_scatter_")
        same_dtype("masked_scatter", self, source)
        places = mask.broadcast_to(self.shape).reshape(-1)
        slot = places.long().cumsum(0) - 1
        picked = _apply("tensor.take", source.to(self.dtype).reshape(-1), _where(places, slot, 0), axis=0)
        return _where(places, picked, self.reshape(-1)).reshape(self.shape)

    def nonzero_static(self, *, size: int, fill_value: int = -1) -> Any:
        """The first ``size`` indices of nonzero elements, ``(size, ndim)`` int64, rows past the count ``fill_value``:
        the s-th nonzero is where the running count of nonzeros reaches ``s + 1`` (a static shape, so it traces)."""
        shape = _static_shape("nonzero_static", self)
        nonzero = (self != 0).reshape(-1)
        rank = nonzero.long().cumsum(0) - 1
        hits = (rank.unsqueeze(0) == _constant(np.arange(size)[:, None])) & nonzero  # (size, numel)
        flat = _where(hits, _constant(np.arange(int(np.prod(shape)))), 0).sum(1, keepdim=True)
        strides = _constant(np.cumprod((1,) + shape[:0:-1])[::-1].copy())
        coordinates = flat.floor_divide(strides).remainder(_constant(np.asarray(shape, np.int64)))
        return _where(hits.any(1, keepdim=True), coordinates, _constant(fill_value, DType.i64))


# scatter helpers -----------------------------------------------------------------


class ScatterDtypeError(TraceError, RuntimeError):
    """A tensor scattered into one of another dtype: a ``RuntimeError``, as PyTorch's."""


def same_dtype(method: str, x: Any, source: Any) -> None:
    """PyTorch's scatter family refuses a source tensor of another dtype than ``x`` (it would be cast silently)."""
    if _is_tensor(source) and source.dtype is not x.dtype:
        from kiln.frontend.inplace_leaf_checks import located  # lazily: it builds on the Tensor

        raise located(ScatterDtypeError, f"{method}(): self ({x.dtype}) and source ({source.dtype}) must have the same "
                      f"scalar type, as in PyTorch; cast the source first: source.to({x.dtype})")


def _source(x: Any, index: Any, src: Any) -> Any:
    """What is scattered: ``src`` in ``x``'s dtype, or a number as a tensor of ``index``'s shape."""
    if _is_tensor(src):
        return src.to(x.dtype)
    return _constant(src, x.dtype).broadcast_to(index.shape)


def _scattered_sum(x: Any, dim: int, index: Any, source: Any) -> Any:
    """Zeros of ``x``'s shape plus ``source[p]`` at ``p`` with ``index[p]`` put in place along ``dim``."""
    axis = dim % x.ndim
    if index.ndim != x.ndim or source.ndim != x.ndim:
        raise located_error(f"scatter: the index {index.type} and source {source.type} need the rank of {x.type}")
    source = _cut(source, index.shape)
    if x.dtype is DType.bool:
        return _scattered_sum(x.long(), dim, index, source.long()) > 0
    if not all(isinstance(d, int) for d in tuple(x.shape) + tuple(index.shape)):
        return _one_hot_scatter(x, axis, index, source, "sum")
    positions = _flat_positions(x.shape, axis, index).reshape(-1)
    total = _apply("tensor.scatter_add", source.reshape(-1), positions, axis=0, shape=(int(np.prod(x.shape)),))
    return total.reshape(x.shape)


def _flat_positions(shape: tuple[int, ...], axis: int, index: Any) -> Any:
    """Where each ``index`` element lands in the flattened ``shape``: ``index * stride[axis]`` plus its own offset."""
    strides = np.cumprod((1,) + tuple(reversed(shape[1:])))[::-1]
    offsets = sum((np.arange(size).reshape((-1,) + (1,) * (index.ndim - d - 1)) * int(strides[d])
                   for d, size in enumerate(index.shape) if d != axis), np.zeros((), np.int64))
    return index.long() * int(strides[axis]) + _constant(np.asarray(offsets, np.int64))


def _one_hot_scatter(x: Any, axis: int, index: Any, source: Any, combine: str) -> Any:
    """``source`` summed (or multiplied) into the places ``index`` along ``axis`` of ``x``'s shape, through a one-hot
    of the index over that (static) dim; the identity elsewhere. The index must span ``x`` outside ``axis``."""
    from kiln.frontend.functional import movedim

    axis = axis % x.ndim
    size = x.shape[axis]
    if not isinstance(size, int) or any(a != b for d, (a, b) in enumerate(zip(index.shape, x.shape)) if d != axis):
        raise located_error(f"scatter with the index {index.type} into {x.type}: with symbolic dims (or reduce="
                            "'multiply') the scattered dim must be static and the index must match the tensor on the "
                            "other dims; index_add takes a symbolic scattered dim")
    hits = _apply("tensor.one_hot", movedim(index, axis, -1), num_classes=size, dtype=DType.bool)
    values = movedim(_cut(source, index.shape), axis, -1).unsqueeze(-1)
    if combine == "prod":
        return movedim(_where(hits, values, 1).prod(-2), -1, axis)
    return movedim(_where(hits, values, 0).sum(-2), -1, axis)


def _cut(x: Any, shape: tuple[Any, ...]) -> Any:
    """``x`` narrowed to ``shape`` on every dim where it is longer (PyTorch's scatter reads only that much)."""
    for dim, (size, wanted) in enumerate(zip(x.shape, shape)):
        if size != wanted:
            if not isinstance(size, int) or not isinstance(wanted, int) or wanted > size:
                raise located_error(f"scatter: the source {x.type} does not cover the index shape {shape}")
            x = x.narrow(dim, 0, wanted)
    return x


def _count_dtype(x: Any) -> DType:
    return x.dtype if x.dtype.is_float else DType.i64


def _scatter_assign(x: Any, dim: int, index: Any, source: Any) -> Any:
    """PyTorch's assigning ``scatter``: a number written where ``index`` points, a tensor's values (their mean on
    duplicates) there too; ``x`` elsewhere."""
    count_dtype = _count_dtype(x)
    counts = _scattered_sum(x.to(count_dtype), dim, index, _constant(1, count_dtype).broadcast_to(index.shape))
    if not _is_tensor(source):
        return _where(counts > 0, _constant(source, x.dtype), x)
    wide = x.to(count_dtype)
    total = _scattered_sum(wide, dim, index, source.to(count_dtype))
    return _where(counts > 0, _mean_of_writes(total, counts).to(x.dtype), x)


def _mean_of_writes(total: Any, counts: Any) -> Any:
    """``total / counts`` where something was written (truncated for integers), so a single write is exact."""
    safe = _where(counts > 0, counts, 1)
    return total / safe if total.dtype.is_float else total.div(safe, rounding_mode="trunc")


def _vector_index(method: str, index: Any) -> Any:
    if index.ndim > 1:
        raise located_error(f"{method} takes a 1-D (or 0-d) index, got {index.type}")
    return index.reshape(1) if index.ndim == 0 else index


def _index_sum(x: Any, dim: int, index: Any, source: Any) -> Any:
    """Zeros of ``x``'s shape plus the slices of ``source`` along ``dim`` summed in at ``index`` (the IR's op)."""
    if source.dtype is DType.bool:
        return _index_sum(x.long(), dim, index, source.long()) > 0
    return _apply("tensor.scatter_add", source, index, axis=dim, shape=tuple(x.shape))


def _index_counts(x: Any, dim: int, index: Any, dtype: DType) -> Any:
    """How often each slice along ``dim`` is indexed, shaped to broadcast against ``x``."""
    axis = dim % x.ndim
    ones = _constant(1, dtype).broadcast_to(index.shape)
    counts = _apply("tensor.scatter_add", ones, index, axis=0, shape=(x.shape[axis],))
    return counts.reshape((x.shape[axis],) + (1,) * (x.ndim - axis - 1))
