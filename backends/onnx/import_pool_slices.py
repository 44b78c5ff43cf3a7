"""Pools kiln has no op for (dilated windows, 3-D windows, MaxPool's ``Indices``), as reductions over strided slices.

A box window is separable: the max (or sum) over a ``k1 x k2 x k3`` window is,
axis after axis, the max (or sum) over that axis's ``k`` offsets. Along one
axis, offset ``j`` of every window reads the strided slice
``padded[j d : j d + (out - 1) s + 1 : s]``, so a pool over the explicitly
padded input is, per spatial axis, ``k`` slices folded with ``maximum`` or
``add``. An average divides by a count known at import time; an argmax carries
each cell's flat input index along with its value.

For ``MaxPool(kernel 2x2, dilations 2x2)`` on ``x: 1x1x4x4`` (the last axis first)::

    %w0 = slice(%x, axis=3, 0:2:1)   %w1 = slice(%x, axis=3, 2:4:1)   %w = maximum(%w0, %w1)    # 1x1x4x2
    %h0 = slice(%w, axis=2, 0:2:1)   %h1 = slice(%w, axis=2, 2:4:1)   %y = maximum(%h0, %h1)    # 1x1x2x2
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce as fold
from typing import Any

import numpy as np

from kiln.backends.onnx.importer import ImportContext, OnnxImportError
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import is_float_array_dtype


@dataclass(frozen=True)
class Window:
    """One spatial axis of a pooling window, padding resolved.

    >>> Window(size=4, kernel=2, stride=1, dilation=2, begin=0, end=0, extra=0).out
    2
    """

    size: int
    """The input's extent along this axis."""
    kernel: int
    stride: int
    dilation: int
    begin: int
    """Padding before the input."""
    end: int
    """Padding after the input (counted by ``count_include_pad``)."""
    extra: int
    """Cells ``ceil_mode`` adds after the end padding (never counted)."""

    @property
    def span(self) -> int:
        """The cells one window covers, holes included: ``(k - 1) d + 1``."""
        return (self.kernel - 1) * self.dilation + 1

    @property
    def out(self) -> int:
        return (self.size + self.begin + self.end + self.extra - self.span) // self.stride + 1


def window_max(ctx: ImportContext, x: Value, windows: list[Window]) -> Value:
    """The largest element of each window (padding never wins)."""
    padded = _padded(ctx, x, windows, _lowest(x.type.dtype.numpy))
    for axis, window in _innermost_first(windows):
        padded = fold(lambda a, b: ctx.op("tensor.maximum", a, b), _offsets(ctx, padded, axis, window))
    return padded


def window_mean(ctx: ImportContext, x: Value, windows: list[Window], count_pads: bool) -> Value:
    """Each window's sum over the number of cells it counts: input cells, and padding when ``count_pads``."""
    total = _padded(ctx, x, windows, 0.0)
    for axis, window in _innermost_first(windows):
        total = fold(lambda a, b: ctx.op("tensor.add", a, b), _offsets(ctx, total, axis, window))
    return ctx.op("tensor.div", total, window_counts(windows, count_pads).astype(x.type.dtype.numpy))


def window_argmax(ctx: ImportContext, x: Value, windows: list[Window], storage_order: int) -> tuple[Value, Value]:
    """MaxPool's two outputs: each window's largest element and its flat index into ``x``.

    The index counts ``x`` as ONNX does: ``(n C + c) H W + h W + w`` (``storage_order=1``: ``h + w H``
    within an image); on ties the first in row-major order wins, and a padding cell never does.
    """
    batch, channels = x.type.shape[:2]
    if not all(isinstance(d, int) for d in (batch, channels)):
        raise OnnxImportError(f"MaxPool's Indices output needs a static batch and channel count, got {x.type}")
    values = _padded(ctx, x, windows, _lowest(x.type.dtype.numpy))
    positions = ctx.value(flat_positions(windows, storage_order))
    for axis, window in _innermost_first(windows):
        pairs = zip(_offsets(ctx, values, axis, window), _offsets(ctx, positions, axis, window))
        values, positions = fold(lambda best, next_: _first_largest(ctx, best, next_), pairs)
    image = math.prod(w.size for w in windows)
    base = (np.arange(batch * channels, dtype=np.int64) * image).reshape((batch, channels) + (1,) * len(windows))
    return values, ctx.op("tensor.add", positions, base)


def _innermost_first(windows: list[Window]) -> list[tuple[int, Window]]:
    """(axis, window) from the last spatial axis to the first: an argmax folded in this order keeps the row-major first."""
    return list(enumerate(windows, start=2))[::-1]


def _first_largest(ctx: ImportContext, best: tuple[Value, Value], candidate: tuple[Value, Value]) -> tuple[Value, Value]:
    """Keep ``best`` unless ``candidate`` is strictly larger or ``best`` is padding (index -1)."""
    (best_value, best_index), (value, index) = best, candidate
    larger = ctx.op("tensor.greater", value, best_value)
    take = ctx.op("tensor.where", ctx.op("tensor.less", best_index, np.array(0, np.int64)), np.array(True), larger)
    return ctx.op("tensor.where", take, value, best_value), ctx.op("tensor.where", take, index, best_index)


def _offsets(ctx: ImportContext, x: Value, axis: int, window: Window) -> list[Value]:
    """The ``k`` strided slices along ``axis``: slice ``j`` holds, at output ``o``, padded cell ``o s + j d``."""
    reach = (window.out - 1) * window.stride + 1
    starts = [j * window.dilation for j in range(window.kernel)]
    return [ctx.op("tensor.slice", x, axis=axis, start=start, stop=start + reach, step=window.stride) for start in starts]


def _padded(ctx: ImportContext, x: Value, windows: list[Window], fill: float) -> Value:
    low = (0, 0) + tuple(w.begin for w in windows)
    high = (0, 0) + tuple(w.end + w.extra for w in windows)
    if not any(low + high):
        return x
    return ctx.op("tensor.pad", x, low=low, high=high, interior=(0,) * x.type.rank, value=fill)


def _lowest(dtype: np.dtype) -> float:
    """A fill no element is below: -inf, or the integer type's minimum."""
    return -np.inf if is_float_array_dtype(dtype) else float(np.iinfo(dtype).min)


def window_counts(windows: list[Window], count_pads: bool) -> np.ndarray:
    """How many cells each window averages over, shaped ``(1, 1, out...)``.

    >>> window_counts([Window(size=3, kernel=2, stride=1, dilation=1, begin=1, end=0, extra=0)], count_pads=False)
    array([[[1., 2., 2.]]])
    """
    mask = _padded_array(np.ones([w.size for w in windows]), windows, float(count_pads), 0.0)
    for axis, window in enumerate(windows):
        mask = sum(_array_offsets(mask, axis, window))
    return mask.reshape((1, 1) + mask.shape)


def flat_positions(windows: list[Window], storage_order: int) -> np.ndarray:
    """Each padded cell's flat index within its image (row-major, or column-major for ``storage_order=1``), -1 in padding.

    >>> flat_positions([Window(2, 1, 1, 1, 0, 0, 0), Window(2, 2, 1, 1, 1, 0, 0)], storage_order=1)
    array([[[[-1,  0,  2],
             [-1,  1,  3]]]])
    """
    sizes = [w.size for w in windows]
    positions = np.arange(math.prod(sizes), dtype=np.int64).reshape(sizes, order="F" if storage_order else "C")
    return _padded_array(positions, windows, -1, -1).reshape((1, 1) + tuple(w.size + w.begin + w.end + w.extra for w in windows))


def _padded_array(array: np.ndarray, windows: list[Window], pad_fill: Any, extra_fill: Any) -> np.ndarray:
    """``array`` with each window's padding (``pad_fill``) and then its ceil-mode cells (``extra_fill``)."""
    padded = np.pad(array, [(w.begin, w.end) for w in windows], constant_values=pad_fill)
    return np.pad(padded, [(0, w.extra) for w in windows], constant_values=extra_fill)


def _array_offsets(array: np.ndarray, axis: int, window: Window) -> list[np.ndarray]:
    reach = (window.out - 1) * window.stride + 1
    return [np.take(array, np.arange(j * window.dilation, j * window.dilation + reach, window.stride), axis=axis) for j in range(window.kernel)]
