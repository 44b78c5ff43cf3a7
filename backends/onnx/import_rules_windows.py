"""ONNX import of the window ops: Conv, ConvTranspose, MaxPool, AveragePool (1-D and 2-D).

Padding kiln's ops cannot express directly (``auto_pad=SAME_*``, asymmetric or
wide pads, ``ceil_mode``, padding left out of an average) becomes an explicit
``tensor.pad`` before the op; 1-D windows run as 2-D over a height of 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.backends.onnx.import_rules import optional_input, refuse, text_attr
from kiln.backends.onnx.importer import ImportContext, attributes, onnx_op
from kiln.compiler.ir.core import Value


def _symmetric_2d(node: Any, attrs: dict, x: Value) -> tuple[int, int]:
    """The (h, w) padding of a 2-D window op; refuses what kiln's conv and pool ops cannot express."""
    if x.type.rank != 4:
        raise refuse(node, f"on rank-{x.type.rank} input (only 2-D NCHW)")
    auto_pad = text_attr(attrs, "auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        raise refuse(node, f"with auto_pad={auto_pad}")
    pads = list(attrs.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else [0, 0, 0, 0]
    if pads[:2] != pads[2:]:
        raise refuse(node, f"with asymmetric pads {pads}")
    return pads[0], pads[1]


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
    # ConvTranspose is conv2d's transpose in its input: out = (in - 1) s - 2 p + d (k - 1) + 1 + output_padding
    attrs = attributes(node)
    x, weight = ctx.value(inputs[0]), ctx.value(inputs[1])
    padding = _symmetric_2d(node, attrs, x)
    stride, dilation = tuple(attrs.get("strides", (1, 1))), tuple(attrs.get("dilations", (1, 1)))
    groups = attrs.get("group", 1)
    kernel = weight.type.shape[2:]
    natural = [(x.type.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    extra = list(attrs.get("output_padding", (0, 0)))
    if "output_shape" in attrs:
        extra = [attrs["output_shape"][-2 + i] - natural[i] for i in range(2)]
    if any(e < 0 or e >= max(stride[i], dilation[i]) for i, e in enumerate(extra)):
        raise refuse(node, f"with output padding {extra}")
    input_shape = (x.type.shape[0], weight.type.shape[1] * groups) + tuple(n + e for n, e in zip(natural, extra))
    out = ctx.op("tensor.conv2d_input_grad", x, weight, input_shape=input_shape, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return [_add_channel_bias(ctx, out, inputs)]


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


def _ceil_extra(size: int, k: int, s: int, begin: int, end: int) -> int:
    """Cells to add at the end for ceil_mode; a last window starting in the end padding is dropped (ONNX, PyTorch)."""
    out = -(-(size + begin + end - k) // s) + 1
    if (out - 1) * s >= size + begin:
        out -= 1
    return max(0, (out - 1) * s + k - (size + begin + end))


def _pool(ctx: ImportContext, node: Any, x: Value, kind: str) -> Value:
    attrs = attributes(node)
    if any(d != 1 for d in attrs.get("dilations", ())) or attrs.get("storage_order", 0):
        raise refuse(node, "with dilations or storage_order")
    kernel = tuple(attrs["kernel_shape"])
    if len(kernel) not in (1, 2) or x.type.rank != len(kernel) + 2:
        raise refuse(node, f"with a {len(kernel)}-D window (only 1-D and 2-D)")
    if len(kernel) == 1:  # 1-D as 2-D over a height of 1
        flat = ctx.op("tensor.reshape", x, shape=x.type.shape[:2] + (1,) + x.type.shape[2:])
        one_d = {**attrs, "kernel_shape": (1,) + kernel, "strides": (1,) + tuple(attrs.get("strides", (1,))),
                 "pads": _pads_2d_from_1d(attrs.get("pads"))}
        pooled = _pool_2d(ctx, node, flat, kind, one_d)
        return ctx.op("tensor.reshape", pooled, shape=pooled.type.shape[:2] + pooled.type.shape[3:])
    return _pool_2d(ctx, node, x, kind, attrs)


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
    if len(node.output) > 1 and node.output[1]:
        raise refuse(node, "with an Indices output")
    return [_pool(ctx, node, ctx.value(inputs[0]), "max")]


@onnx_op("AveragePool")
def average_pool(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    return [_pool(ctx, node, ctx.value(inputs[0]), "avg")]
