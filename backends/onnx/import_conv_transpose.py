"""ConvTranspose's geometry, and its 2-D and 3-D forms from ``tensor.conv2d_input_grad``.

A transposed convolution scatters each input cell through the kernel: along an
axis, input ``i`` and tap ``t`` land on full-output cell ``i s + t d``, so the
full output has ``(in - 1) s + d (k - 1) + 1`` cells. ONNX keeps the window
``[begin, begin + length)`` of it; cells past the full output's ends are
zeros (``output_padding``, a large ``output_shape``). ``conv2d_input_grad``
crops both ends by its symmetric ``padding``; the rest is a slice or a zero
pad. A 3-D one is a sum over the depth taps of 2-D ones, each placed at
depths ``i s + t d`` by an interior pad.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce as fold
from typing import Any

from kiln.backends.onnx.import_rules import refuse, text_attr
from kiln.backends.onnx.importer import ImportContext
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import dim_product


@dataclass(frozen=True)
class TransposedAxis:
    """One spatial axis of a ConvTranspose.

    >>> axis = TransposedAxis(size=3, kernel=3, stride=2, dilation=1, begin=1, length=6)
    >>> axis.full, axis.shared
    (7, 0)
    """

    size: int
    """The input's extent."""
    kernel: int
    stride: int
    dilation: int
    begin: int
    """The first full-output cell kept (negative: zeros before it)."""
    length: int
    """The output's extent."""

    @property
    def full(self) -> int:
        return (self.size - 1) * self.stride + (self.kernel - 1) * self.dilation + 1

    @property
    def shared(self) -> int:
        """Cells cropped from both ends, which ``conv2d_input_grad``'s symmetric padding does."""
        return max(0, min(self.begin, self.full - self.begin - self.length))


def transposed_axes(node: Any, attrs: dict, x: Value, weight: Value) -> list[TransposedAxis]:
    """Each spatial axis's geometry, from strides, dilations, pads or auto_pad, output_padding and output_shape."""
    sizes, kernel = x.type.shape[2:], weight.type.shape[2:]
    if not all(isinstance(d, int) for d in sizes + kernel):
        raise refuse(node, f"over symbolic spatial dims ({x.type}, weight {weight.type})")
    rank = len(sizes)
    stride, dilation = tuple(attrs.get("strides", (1,) * rank)), tuple(attrs.get("dilations", (1,) * rank))
    full = [TransposedAxis(n, k, s, d, 0, 0).full for n, k, s, d in zip(sizes, kernel, stride, dilation)]
    begins, lengths = _kept_window(attrs, sizes, full, stride)
    return [TransposedAxis(*fields) for fields in zip(sizes, kernel, stride, dilation, begins, lengths)]


def _kept_window(attrs: dict, sizes: tuple[int, ...], full: list[int], stride: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """(begins, lengths), as ONNX's reference: SAME_* without pads splits the surplus over a target ``in * s``
    (or ``output_shape``), the odd cell at the end for SAME_UPPER; otherwise ``pads`` (default 0) crop, and
    ``output_shape``, if given, sets the length."""
    rank = len(sizes)
    extra = list(attrs.get("output_padding", (0,) * rank))
    auto_pad = text_attr(attrs, "auto_pad", "NOTSET")
    if "pads" not in attrs and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        lengths = list(attrs.get("output_shape", [n * s for n, s in zip(sizes, stride)]))[-rank:]
        totals = [f + e - length for f, e, length in zip(full, extra, lengths)]
        return [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals], lengths
    pads = list(attrs.get("pads", (0,) * 2 * rank)) if auto_pad != "VALID" else [0] * 2 * rank
    begins, ends = pads[:rank], pads[rank:]
    if "output_shape" in attrs:
        return begins, list(attrs["output_shape"])[-rank:]
    return begins, [f + e - b - end for f, e, b, end in zip(full, extra, begins, ends)]


def transposed_2d(ctx: ImportContext, x: Value, weight: Value, axes: list[TransposedAxis], groups: int) -> Value:
    """A 2-D ConvTranspose: ``conv2d_input_grad`` crops what both ends share, then each axis gets its window."""
    shared = tuple(a.shared for a in axes)
    shape = (x.type.shape[0], weight.type.shape[1] * groups) + tuple(a.full - 2 * p for a, p in zip(axes, shared))
    out = ctx.op("tensor.conv2d_input_grad", x, weight, input_shape=shape, stride=tuple(a.stride for a in axes),
                 padding=shared, dilation=tuple(a.dilation for a in axes), groups=groups)
    for axis, (a, p) in enumerate(zip(axes, shared), start=2):
        out = _window(ctx, out, axis, a.begin - p, a.length)
    return out


def transposed_3d(ctx: ImportContext, x: Value, weight: Value, axes: list[TransposedAxis], groups: int) -> Value:
    """A 3-D ConvTranspose: per depth tap, a 2-D one over (batch x depth) images, spread to depths ``i s + t d``, summed."""
    depth = axes[0]
    batch, channels, frames = x.type.shape[:3]
    images = ctx.op("tensor.transpose", x, perm=(0, 2, 1, 3, 4))  # N, D, C, H, W
    images = ctx.op("tensor.reshape", images, shape=(dim_product((batch, frames)), channels) + x.type.shape[3:])
    layers = []
    for tap in range(depth.kernel):
        tap_weight = ctx.op("tensor.slice", weight, axis=2, start=tap, stop=tap + 1, step=1)
        tap_weight = ctx.op("tensor.reshape", tap_weight, shape=weight.type.shape[:2] + weight.type.shape[3:])
        planes = transposed_2d(ctx, images, tap_weight, axes[1:], groups)
        planes = ctx.op("tensor.reshape", planes, shape=(batch, frames) + planes.type.shape[1:])
        low, high = tap * depth.dilation, (depth.kernel - 1 - tap) * depth.dilation
        layers.append(ctx.op("tensor.pad", planes, low=(0, low, 0, 0, 0), high=(0, high, 0, 0, 0),
                             interior=(0, depth.stride - 1, 0, 0, 0), value=0.0))
    out = ctx.op("tensor.transpose", fold(lambda a, b: ctx.op("tensor.add", a, b), layers), perm=(0, 2, 1, 3, 4))
    return _window(ctx, out, 2, depth.begin, depth.length)


def _window(ctx: ImportContext, x: Value, axis: int, start: int, length: int) -> Value:
    """Cells ``[start, start + length)`` of ``x`` along ``axis``, zeros where that runs past either end."""
    size = x.type.shape[axis]
    low = min(max(start, 0), size)
    high = min(max(start + length, low), size)
    before = min(max(-start, 0), length)
    after = length - before - (high - low)
    if (low, high) != (0, size):
        x = ctx.op("tensor.slice", x, axis=axis, start=low, stop=high, step=1)
    if before or after:
        pads = [(0, 0)] * x.type.rank
        pads[axis] = (before, after)
        x = ctx.op("tensor.pad", x, low=tuple(p[0] for p in pads), high=tuple(p[1] for p in pads), interior=(0,) * x.type.rank, value=0.0)
    return x
