"""ONNX import of the contractions and reductions: MatMul, Gemm, the Reduce* family (ReduceProd over shapes as
well), ArgMax (``select_last_index`` too) and CumSum (exclusive and reverse)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.backends.onnx.import_rules_common import _take_positions, refuse
from kiln.backends.onnx.importer import ImportContext, ShapeValue, as_array, attributes, onnx_op
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import normalize_axes
from kiln.compiler.ops.registry import OPS


@onnx_op("MatMul")
def matmul(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    return [ctx.op("tensor.matmul", *inputs)]


@onnx_op("Gemm")
def gemm(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    # Y = alpha * A' B' + beta * C
    attrs = attributes(node)
    a, b = (ctx.value(i) for i in inputs[:2])
    a = ctx.op("tensor.transpose", a, perm=(1, 0)) if attrs.get("transA", 0) else a
    b = ctx.op("tensor.transpose", b, perm=(1, 0)) if attrs.get("transB", 0) else b
    dtype = a.type.dtype.numpy
    product = ctx.op("tensor.mul", ctx.op("tensor.matmul", a, b), np.array(attrs.get("alpha", 1.0), dtype))
    if len(inputs) < 3 or inputs[2] is None:
        return [product]
    return [ctx.op("tensor.add", product, ctx.op("tensor.mul", inputs[2], np.array(attrs.get("beta", 1.0), dtype)))]


def _reduce_axes(ctx: ImportContext, node: Any, inputs: list[Any], rank: int) -> tuple[int, ...] | None:
    attrs = attributes(node)
    axes = attrs.get("axes")
    if len(inputs) > 1 and inputs[1] is not None:
        axes = as_array(inputs[1], f"{node.op_type} axes").reshape(-1).tolist()
    if not axes:
        return () if attrs.get("noop_with_empty_axes", 0) else None
    return normalize_axes(tuple(int(a) for a in axes), rank)


def _reduce(kiln_op: str):
    def handle(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
        x = ctx.value(inputs[0])
        axes = _reduce_axes(ctx, node, inputs, x.type.rank)
        if axes == ():
            return [x]
        return [ctx.op(kiln_op, x, axes=axes, keepdims=bool(attributes(node).get("keepdims", 1)))]

    return handle


onnx_op("ReduceSum")(_reduce("tensor.reduce_sum"))


onnx_op("ReduceMean")(_reduce("tensor.reduce_mean"))


onnx_op("ReduceMax")(_reduce("tensor.reduce_max"))


if "tensor.reduce_min" in OPS:
    onnx_op("ReduceMin")(_reduce("tensor.reduce_min"))


@onnx_op("ReduceProd")
def reduce_prod(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    """A product: over shapes (``numel``, symbolic dims included) or known arrays while importing, else ``tensor.reduce_prod``."""
    item = inputs[0]
    if isinstance(item, ShapeValue) and item.source is not None and not all(isinstance(d, int) for d in item.dims):
        return [ctx.op("tensor.numel", item.source, axes=item.axes, dtype="i64")]
    if isinstance(item, Value):
        return _reduce("tensor.reduce_prod")(ctx, node, inputs)
    array = as_array(item, "ReduceProd input")
    axes = _reduce_axes(ctx, node, inputs, array.ndim)
    return [np.prod(array, axis=axes, keepdims=bool(attributes(node).get("keepdims", 1)))]


@onnx_op("ArgMax")
def argmax(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    attrs = attributes(node)
    x, axis, keepdims = ctx.value(inputs[0]), attributes(node).get("axis", 0), bool(attrs.get("keepdims", 1))
    if not attrs.get("select_last_index", 0):
        return [ctx.op("tensor.argmax", x, axis=axis, keepdims=keepdims)]
    # the last largest: the first largest of the reversed axis, counted from the end
    size = x.type.shape[axis % x.type.rank]
    if isinstance(size, str):
        raise refuse(node, f"with select_last_index=1 along the symbolic dim {size}")
    reversed_x = _take_positions(ctx, x, axis % x.type.rank, np.arange(size)[::-1])
    return [ctx.op("tensor.sub", np.array(size - 1, np.int64), ctx.op("tensor.argmax", reversed_x, axis=axis, keepdims=keepdims))]


@onnx_op("CumSum")
def cumsum(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    attrs = attributes(node)
    x, reverse = ctx.value(inputs[0]), bool(attrs.get("reverse", 0))
    axis = int(as_array(inputs[1], "CumSum axis").reshape(-1)[0]) % x.type.rank
    total = ctx.op("tensor.cumsum", x, axis=axis, reverse=reverse)
    return [_exclusive(ctx, node, total, axis, reverse) if attrs.get("exclusive", 0) else total]


def _exclusive(ctx: ImportContext, node: Any, total: Value, axis: int, reverse: bool) -> Value:
    """The exclusive scan: the inclusive one shifted one place along ``axis`` (away from where it starts), 0 shifted in."""
    size = total.type.shape[axis]
    if isinstance(size, str):
        raise refuse(node, f"with exclusive=1 along the symbolic dim {size}")
    if size == 0:
        return total
    rank, start = total.type.rank, int(reverse)
    kept = ctx.op("tensor.slice", total, axis=axis, start=start, stop=start + size - 1, step=1)
    low, high = [0] * rank, [0] * rank
    (high if reverse else low)[axis] = 1
    return ctx.op("tensor.pad", kept, low=tuple(low), high=tuple(high), interior=(0,) * rank, value=0.0)
