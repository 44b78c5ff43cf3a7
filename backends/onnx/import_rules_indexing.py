"""ONNX import of the indexing ops: Gather (of shapes while importing, of data as ``tensor.take``), OneHot and
ScatterElements (its reductions written with ``tensor.one_hot`` and reductions over the hit cells)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.backends.onnx.import_rules_common import _classes_to_axis, _int64_labels, _plain_known, refuse, text_attr
from kiln.backends.onnx.importer import ImportContext, OnnxImportError, ShapeValue, as_array, attributes, known, onnx_op
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import is_float_array_dtype
from kiln.compiler.ops.registry import OPS


@onnx_op("Gather")
def gather(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    data, indices = inputs
    axis = attributes(node).get("axis", 0)
    if isinstance(data, ShapeValue) and known(indices):
        picked = np.asarray(as_array(indices, "Gather indices"))
        chosen = [int(i) % len(data.dims) for i in picked.reshape(-1)]
        axes = tuple(data.axes[i] for i in chosen) if data.axes else ()
        dims = tuple(data.dims[i] for i in chosen)
        return [ShapeValue(dims, data.source, axes) if picked.ndim else _scalar_dim(dims[0], data.source, axes)]
    if _plain_known(data) and _plain_known(indices):
        return [np.take(as_array(data, "Gather data"), as_array(indices, "Gather indices"), axis=axis)]
    if "tensor.take" not in OPS:
        raise OnnxImportError("Gather on run-time data needs the tensor.take op")
    return [ctx.op("tensor.take", data, _wrap_negative(ctx, ctx.value(data), indices, axis), axis=axis)]


def _scalar_dim(dim: Any, source: Value | None, axes: tuple[int, ...]) -> Any:
    return np.array(dim, np.int64) if isinstance(dim, int) else ShapeValue((dim,), source, axes)


def _wrap_negative(ctx: ImportContext, data: Value, indices: Any, axis: int) -> Any:
    """ONNX indices may be negative (counted from the end)."""
    size = data.type.shape[axis]
    if known(indices):
        array = as_array(indices, "Gather indices")
        return np.where(array < 0, array + size, array).astype(np.int64) if isinstance(size, int) else array
    return indices


@onnx_op("OneHot")
def one_hot(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    # one_hot(i) * (on - off) + off, negative indices counted from depth, class axis moved to `axis`
    indices, depth, values = inputs
    depth = int(as_array(depth, "OneHot depth").reshape(-1)[0])
    values = as_array(values, "OneHot values").reshape(-1)
    off, on = values
    hot = ctx.op("tensor.one_hot", _int64_labels(ctx, indices, depth), num_classes=depth, dtype=values.dtype.name)
    scaled = ctx.op("tensor.add", ctx.op("tensor.mul", hot, np.asarray(on - off, values.dtype)), np.asarray(off, values.dtype))
    return [_classes_to_axis(ctx, scaled, attributes(node).get("axis", -1))]


SCATTER_REDUCTIONS = {
    "add": ("tensor.reduce_sum", "tensor.add"),
    "mul": ("tensor.reduce_prod", "tensor.mul"),
    "max": ("tensor.reduce_max", "tensor.maximum"),
    "min": ("tensor.reduce_min", "tensor.minimum"),
}
"""How ScatterElements combines the updates that land on one cell (duplicates included), then those with the data."""


@onnx_op("ScatterElements")
def scatter_elements(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    # hit[..., i, ..., p] = (indices[..., i, ...] == p) along axis; cell p combines the updates with hit over i, then data
    attrs = attributes(node)
    reduction = text_attr(attrs, "reduction", "none")
    if reduction not in ("none", *SCATTER_REDUCTIONS):
        raise refuse(node, f"with reduction={reduction!r}")
    data, indices, updates = (ctx.value(i) for i in inputs)
    axis = attrs.get("axis", 0) % data.type.rank
    if any(a != b for i, (a, b) in enumerate(zip(indices.type.shape, data.type.shape)) if i != axis):
        raise refuse(node, f"with indices {indices.type} narrower than data {data.type} off the axis")
    size, dtype = data.type.shape[axis], data.type.dtype.numpy
    hot = ctx.op("tensor.one_hot", _int64_labels(ctx, indices, size), num_classes=size, dtype=data.type.dtype)
    hit = ctx.op("tensor.greater", hot, np.array(0, dtype))
    reduce_op, combine_op = SCATTER_REDUCTIONS[reduction if reduction != "none" else "add"]  # none scatters a sum
    landed = ctx.op("tensor.where", hit, ctx.op("tensor.reshape", updates, shape=updates.type.shape + (1,)), _identity(reduction, dtype))
    scattered = _classes_to_axis(ctx, ctx.op(reduce_op, landed, axes=(axis,)), axis)
    if reduction != "none":
        return [ctx.op(combine_op, data, scattered)]
    # none: written cells take their update (ONNX leaves duplicate indices undefined; here they add), the rest keep data
    written = _classes_to_axis(ctx, ctx.op("tensor.reduce_max", hot, axes=(axis,)), axis)
    return [ctx.op("tensor.where", ctx.op("tensor.greater", written, np.array(0, dtype)), scattered, data)]


def _identity(reduction: str, dtype: np.dtype) -> np.ndarray:
    """What a cell no update lands on contributes: 0 to a sum, 1 to a product, the far end to a max or a min."""
    if reduction not in ("max", "min"):
        return np.array(1 if reduction == "mul" else 0, dtype)
    lowest, highest = (-np.inf, np.inf) if is_float_array_dtype(dtype) else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    return np.array(lowest if reduction == "max" else highest, dtype)
