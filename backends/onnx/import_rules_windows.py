"""ONNX import of the window ops: Conv (1-D, 2-D), ConvTranspose (1-D to 3-D), MaxPool and AveragePool (any rank).

Padding kiln's ops cannot express directly (``auto_pad=SAME_*``, asymmetric or
wide pads, ``ceil_mode``, padding left out of an average) becomes an explicit
``tensor.pad`` before the op; 1-D windows run as 2-D over a height of 1.
Pools kiln has no op for (dilated, 3-D, with ``Indices``) fold strided slices
(``import_pool_slices.py``); ConvTranspose's geometry and its 3-D form are in
``import_conv_transpose.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.backends.onnx.import_conv_transpose import TransposedAxis, transposed_2d, transposed_3d, transposed_axes
from kiln.backends.onnx.import_pool_slices import Window, window_argmax, window_max, window_mean
from kiln.backends.onnx.import_rules import optional_input, refuse, text_attr
from kiln.backends.onnx.importer import ImportContext, attributes, onnx_op
from kiln.compiler.ir.core import Value


@onnx_op("Conv")
def conv(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    attrs = attributes(node)
    x, weight = ctx.value(inputs[0]), ctx.value(inputs[1])
    if x.type.rank == 3:  # 1-D as 2-D over a height of 1
        x2 = ctx.op("tensor.reshape", x, shape=x.type.shape[:2] + (1,) + x.type.shape[2:])
        w2 = ctx.op("tensor.reshape", weight, shape=weight.type.shape[:2] + (1,) + weight.type.shape[2:])
        out = _conv_2d(ctx, node, _attrs_2d_from_1d(attrs), x2, w2)
        out = ctx.op("tensor.reshape", out, shape=out.type.shape[:2] + out.type.shape[3:])
    else:
        out = _conv_2d(ctx, node, attrs, x, weight)
    return [_add_channel_bias(ctx, out, inputs)]


def _attrs_2d_from_1d(attrs: dict) -> dict:
    """A 1-D window's attributes for the same op over a height of 1."""
    begin, end = tuple(attrs.get("pads", (0, 0)))
    return {**attrs, "strides": (1,) + tuple(attrs.get("strides", (1,))), "dilations": (1,) + tuple(attrs.get("dilations", (1,))),
            "pads": (0, begin, 0, end), **({"kernel_shape": (1,) + tuple(attrs["kernel_shape"])} if "kernel_shape" in attrs else {})}


def _conv_2d(ctx: ImportContext, node: Any, attrs: dict, x: Value, weight: Value) -> Value:
    """conv2d, with padding it cannot express (auto_pad SAME_*, asymmetric) applied as an explicit zero pad first."""
    if x.type.rank != 4:
        raise refuse(node, f"on rank-{x.type.rank} input (only 1-D and 2-D)")
    stride, dilation = tuple(attrs.get("strides", (1, 1))), tuple(attrs.get("dilations", (1, 1)))
    pads = _explicit_pads(node, attrs, x.type.shape[2:], weight.type.shape[2:], stride, dilation)
    if any(b != e for b, e in pads):
        x = ctx.op("tensor.pad", x, low=(0, 0, pads[0][0], pads[1][0]), high=(0, 0, pads[0][1], pads[1][1]), interior=(0,) * 4, value=0.0)
        pads = [(0, 0), (0, 0)]
    return ctx.op("tensor.conv2d", x, weight, stride=stride, padding=(pads[0][0], pads[1][0]), dilation=dilation, groups=attrs.get("group", 1))


def _add_channel_bias(ctx: ImportContext, out: Value, inputs: list[Any]) -> Value:
    bias = optional_input(inputs, 2)
    if bias is None:
        return out
    return ctx.op("tensor.add", out, ctx.op("tensor.reshape", bias, shape=(1, out.type.shape[1]) + (1,) * (out.type.rank - 2)))


@onnx_op("ConvTranspose")
def conv_transpose(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    # the transpose of a convolution in its input: each axis's full output has (in - 1) s + d (k - 1) + 1 cells,
    # of which ONNX keeps [begin, begin + length) (zeros past either end: output_padding, output_shape)
    attrs = attributes(node)
    x, weight = ctx.value(inputs[0]), ctx.value(inputs[1])
    axes, groups = transposed_axes(node, attrs, x, weight), attrs.get("group", 1)
    if x.type.rank == 3:  # 1-D as 2-D over a height of 1
        out = transposed_2d(ctx, _unit_height(ctx, x), _unit_height(ctx, weight), [TransposedAxis(1, 1, 1, 1, 0, 1)] + axes, groups)
        out = ctx.op("tensor.reshape", out, shape=out.type.shape[:2] + out.type.shape[3:])
    elif x.type.rank == 4:
        out = transposed_2d(ctx, x, weight, axes, groups)
    elif x.type.rank == 5:
        out = transposed_3d(ctx, x, weight, axes, groups)
    else:
        raise refuse(node, f"on a rank-{x.type.rank} input (only 1-D, 2-D and 3-D)")
    return [_add_channel_bias(ctx, out, inputs)]


def _unit_height(ctx: ImportContext, x: Value) -> Value:
    return ctx.op("tensor.reshape", x, shape=x.type.shape[:2] + (1,) + x.type.shape[2:])


def _explicit_pads(node: Any, attrs: dict, sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis, auto_pad resolved (SAME_UPPER puts the odd cell at the end)."""
    auto_pad = text_attr(attrs, "auto_pad", "NOTSET")
    rank = len(sizes)
    if auto_pad == "VALID":
        return [(0, 0)] * rank
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(sizes, kernel, stride, dilation):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            pads.append((small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small))
        return pads
    flat = list(attrs.get("pads", [0] * 2 * rank))
    return list(zip(flat[:rank], flat[rank:]))


def _ceil_extra(size: int, span: int, s: int, begin: int, end: int) -> int:
    """Cells to add at the end for ceil_mode, a window covering ``span`` cells.

    A last window starting in the end padding is dropped (ONNX, PyTorch).
    """
    out = -(-(size + begin + end - span) // s) + 1
    if (out - 1) * s >= size + begin:
        out -= 1
    return max(0, (out - 1) * s + span - (size + begin + end))


def _pool(ctx: ImportContext, node: Any, x: Value, kind: str) -> Value:
    attrs = attributes(node)
    kernel = tuple(attrs["kernel_shape"])
    if x.type.rank != len(kernel) + 2:
        raise refuse(node, f"with a {len(kernel)}-D window on a rank-{x.type.rank} input")
    if len(kernel) > 2 or any(d != 1 for d in attrs.get("dilations", ())):  # kiln's pool ops are 2-D and undilated
        windows = pool_windows(node, attrs, x)
        if kind == "max":
            return window_max(ctx, x, windows)
        return window_mean(ctx, x, windows, bool(attrs.get("count_include_pad", 0)))
    if len(kernel) == 1:  # 1-D as 2-D over a height of 1
        flat = ctx.op("tensor.reshape", x, shape=x.type.shape[:2] + (1,) + x.type.shape[2:])
        one_d = {**attrs, "kernel_shape": (1,) + kernel, "strides": (1,) + tuple(attrs.get("strides", (1,))),
                 "pads": _pads_2d_from_1d(attrs.get("pads"))}
        pooled = _pool_2d(ctx, node, flat, kind, one_d)
        return ctx.op("tensor.reshape", pooled, shape=pooled.type.shape[:2] + pooled.type.shape[3:])
    return _pool_2d(ctx, node, x, kind, attrs)


def pool_windows(node: Any, attrs: dict, x: Value) -> list[Window]:
    """The pool's window along each spatial axis: auto_pad resolved, ceil_mode as extra cells at the end."""
    sizes, kernel = x.type.shape[2:], tuple(attrs["kernel_shape"])
    if not all(isinstance(size, int) for size in sizes):
        raise refuse(node, f"over the symbolic spatial dims of {x.type}")
    stride = tuple(attrs.get("strides", (1,) * len(kernel)))
    dilation = tuple(attrs.get("dilations", (1,) * len(kernel)))
    pads = _explicit_pads(node, attrs, sizes, kernel, stride, dilation)
    windows = []
    for size, k, s, d, (begin, end) in zip(sizes, kernel, stride, dilation, pads):
        extra = _ceil_extra(size, (k - 1) * d + 1, s, begin, end) if attrs.get("ceil_mode", 0) else 0
        windows.append(Window(size, k, s, d, begin, end, extra))
    return windows


def _pads_2d_from_1d(pads: Any) -> tuple[int, ...]:
    begin, end = tuple(pads) if pads else (0, 0)
    return (0, begin, 0, end)


def _pool_2d(ctx: ImportContext, node: Any, x: Value, kind: str, attrs: dict) -> Value:
    kernel, stride = tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", (1, 1)))
    sizes = x.type.shape[2:]
    pads = _explicit_pads(node, attrs, sizes, kernel, stride, (1, 1))
    extra = [_ceil_extra(sizes[a], kernel[a], stride[a], *pads[a]) if attrs.get("ceil_mode", 0) else 0 for a in range(2)]
    symmetric = all(b == e and 2 * b <= k for (b, e), k in zip(pads, kernel)) and not any(extra)
    excluded = kind == "avg" and any(b or e for b, e in pads) and not attrs.get("count_include_pad", 0)
    if symmetric and not excluded:
        op = "tensor.max_pool2d" if kind == "max" else "tensor.avg_pool2d"
        return ctx.op(op, x, kernel_size=kernel, stride=stride, padding=(pads[0][0], pads[1][0]))
    return _padded_pool(ctx, x, kind, kernel, stride, pads, extra, bool(attrs.get("count_include_pad", 0)))


def _padded_pool(ctx: ImportContext, x: Value, kind: str, kernel, stride, pads, extra, count_pads: bool) -> Value:
    """Pools with padding kiln's ops cannot express: pad explicitly, pool unpadded; averages divide by a pooled mask."""
    dtype = x.type.dtype.numpy
    low = (0, 0, pads[0][0], pads[1][0])
    high = (0, 0, pads[0][1] + extra[0], pads[1][1] + extra[1])
    fill = -np.inf if kind == "max" else 0.0
    padded = ctx.op("tensor.pad", x, low=low, high=high, interior=(0,) * 4, value=fill)
    settings = dict(kernel_size=kernel, stride=stride, padding=(0, 0))
    if kind == "max":
        return ctx.op("tensor.max_pool2d", padded, **settings)
    ones = ctx.op("tensor.broadcast_to", np.array(1, dtype), shape=x.type.shape)
    counted = ctx.op("tensor.pad", ones, low=low, high=(0, 0, pads[0][1], pads[1][1]), interior=(0,) * 4, value=1.0 if count_pads else 0.0)
    mask = ctx.op("tensor.pad", counted, low=(0,) * 4, high=(0, 0, extra[0], extra[1]), interior=(0,) * 4, value=0.0)
    return ctx.op("tensor.div", ctx.op("tensor.avg_pool2d", padded, **settings), ctx.op("tensor.avg_pool2d", mask, **settings))


@onnx_op("MaxPool")
def max_pool(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    original = ctx.value(inputs[0])
    integer = original.type.dtype.is_int  # ONNX's uint8/int8 MaxPool: kiln pools floats, and float32 holds those exactly
    x = ctx.op("tensor.cast", original, dtype="f32") if integer else original
    if len(node.output) > 1 and node.output[1]:  # Indices: the argmax rides along the sliced max
        attrs = attributes(node)
        pooled, *indices = window_argmax(ctx, x, pool_windows(node, attrs, x), attrs.get("storage_order", 0))
    else:
        pooled, indices = _pool(ctx, node, x, "max"), []
    return [ctx.op("tensor.cast", pooled, dtype=original.type.dtype) if integer else pooled, *indices]


@onnx_op("AveragePool")
def average_pool(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    return [_pool(ctx, node, ctx.value(inputs[0]), "avg")]
