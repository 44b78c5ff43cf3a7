"""ONNX import of the shape and movement ops: Shape, Concat, Unsqueeze, Squeeze, Reshape, Flatten, Transpose,
Expand, Slice (backward steps too), Pad (constant, edge, reflect, wrap) and Trilu. Known inputs (shape arithmetic) are
computed while importing, so a graph that builds its shapes from ``Shape`` keeps them static."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.backends.onnx.import_rules_common import _plain_known, _take_positions, optional_input, refuse, text_attr
from kiln.backends.onnx.importer import ImportContext, OnnxImportError, ShapeValue, as_array, as_dims, attributes, known, onnx_op
from kiln.compiler.ir.types import broadcast_shapes, normalize_axes
from kiln.compiler.ops.registry import OPS


@onnx_op("Shape")
def shape(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    x = ctx.value(inputs[0])
    attrs = attributes(node)
    axes = list(range(x.type.rank))[slice(attrs.get("start", 0), attrs.get("end"))]
    return [ShapeValue(tuple(x.type.shape[a] for a in axes), x, tuple(axes))]


@onnx_op("Concat")
def concat(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    axis = attributes(node)["axis"]
    if all(known(i) for i in inputs):
        dims = sum((as_dims(i, "Concat input") for i in inputs), ())
        return [ShapeValue(dims)]
    if "tensor.concat" not in OPS:
        raise OnnxImportError("Concat on run-time data needs the tensor.concat op")
    values = [ctx.value(i) for i in inputs]
    return [ctx.builder.op("tensor.concat", *values, axis=axis)]


@onnx_op("Unsqueeze")
def unsqueeze(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    axes = _axes_argument(node, inputs)
    if isinstance(inputs[0], ShapeValue):
        return [inputs[0]]  # a scalar dim becomes a one-element shape
    if known(inputs[0]):
        return [np.expand_dims(np.asarray(inputs[0]), tuple(axes))]
    x = ctx.value(inputs[0])
    rank = x.type.rank + len(axes)
    axes = normalize_axes(tuple(axes), rank)
    shape, source = [], iter(x.type.shape)
    for axis in range(rank):
        shape.append(1 if axis in axes else next(source))
    return [ctx.op("tensor.reshape", x, shape=tuple(shape))]


def _axes_argument(node: Any, inputs: list[Any]) -> list[int]:
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(a) for a in as_array(inputs[1], f"{node.op_type} axes").reshape(-1)]
    return list(attributes(node).get("axes", []))


@onnx_op("Squeeze")
def squeeze(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    x = ctx.value(inputs[0])
    axes = _axes_argument(node, inputs)
    axes = normalize_axes(tuple(axes), x.type.rank) if axes else tuple(i for i, d in enumerate(x.type.shape) if d == 1)
    return [ctx.op("tensor.reshape", x, shape=tuple(d for i, d in enumerate(x.type.shape) if i not in axes))]


@onnx_op("Reshape")
def reshape(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    x = ctx.value(inputs[0])
    target = list(as_dims(inputs[1], "Reshape shape"))
    if not attributes(node).get("allowzero", 0):
        target = [x.type.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return [ctx.op("tensor.reshape", x, shape=tuple(target))]


@onnx_op("Flatten")
def flatten(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    x = ctx.value(inputs[0])
    axis = attributes(node).get("axis", 1)
    axis = axis + x.type.rank if axis < 0 else axis
    outer, inner = _product(x.type.shape[:axis]), _product(x.type.shape[axis:])
    return [ctx.op("tensor.reshape", x, shape=(outer, inner))]


def _product(dims: tuple[Any, ...]) -> Any:
    symbols = [d for d in dims if isinstance(d, str)]
    count = math.prod(d for d in dims if isinstance(d, int))
    if not symbols:
        return count
    if len(symbols) == 1 and count == 1:
        return symbols[0]
    raise OnnxImportError(f"flattening dims {dims} gives a product of symbols, which kiln cannot name")


@onnx_op("Transpose")
def transpose(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    perm = attributes(node).get("perm")
    return [ctx.op("tensor.transpose", inputs[0], perm=tuple(perm) if perm else None)]


@onnx_op("Expand")
def expand(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    x = ctx.value(inputs[0])
    target = broadcast_shapes(x.type.shape, as_dims(inputs[1], "Expand shape"))  # Expand broadcasts both ways
    return [ctx.op("tensor.broadcast_to", x, shape=target)]


@onnx_op("Slice")
def slice_(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    if _plain_known(inputs[0]) and all(_plain_known(i) for i in inputs[1:] if i is not None):
        return [_static_slice(inputs)]
    x = ctx.value(inputs[0])
    starts, ends = (as_array(i, "Slice bounds").reshape(-1) for i in inputs[1:3])
    axes = as_array(inputs[3], "Slice axes").reshape(-1) if optional_input(inputs, 3) is not None else np.arange(len(starts))
    steps = as_array(inputs[4], "Slice steps").reshape(-1) if optional_input(inputs, 4) is not None else np.ones(len(starts), np.int64)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = int(axis) % x.type.rank
        size = x.type.shape[axis]
        if isinstance(size, str):
            raise refuse(node, f"along the symbolic dim {size}")
        if step < 1:  # backwards: gather the positions Python's slicing picks
            x = _take_positions(ctx, x, axis, np.arange(size)[int(start) : int(end) : int(step)])
            continue
        begin, stop, _ = slice(int(start), int(end), int(step)).indices(size)
        x = ctx.op("tensor.slice", x, axis=axis, start=begin, stop=max(begin, stop), step=int(step))
    return [x]


def _static_slice(inputs: list[Any]) -> np.ndarray:
    """Slice of a known array (shape arithmetic), numpy's slicing semantics, negative steps included."""
    data = as_array(inputs[0], "Slice data")
    starts, ends = (as_array(i, "Slice bounds").reshape(-1) for i in inputs[1:3])
    axes = as_array(inputs[3], "Slice axes").reshape(-1) if optional_input(inputs, 3) is not None else range(len(starts))
    steps = as_array(inputs[4], "Slice steps").reshape(-1) if optional_input(inputs, 4) is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[int(axis)] = slice(int(start), int(end), int(step))  # Python's clamping is ONNX's
    return data[tuple(index)]


@onnx_op("Pad")
def pad(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    attrs = attributes(node)
    mode = text_attr(attrs, "mode", "constant")
    if mode not in PAD_MODES:
        raise refuse(node, f"mode {mode!r}")
    x = ctx.value(inputs[0])
    pads = as_array(inputs[1], "Pad pads").reshape(-1).tolist()
    value = float(as_array(inputs[2], "Pad value").reshape(-1)[0]) if optional_input(inputs, 2) is not None else 0.0
    axes = as_array(inputs[3], "Pad axes").reshape(-1).tolist() if optional_input(inputs, 3) is not None else list(range(x.type.rank))
    low, high = [0] * x.type.rank, [0] * x.type.rank
    for k, axis in enumerate(axes):
        low[axis % x.type.rank], high[axis % x.type.rank] = pads[k], pads[k + len(axes)]
    if min(low + high) < 0:
        raise refuse(node, f"with negative pads {pads} (cropping)")
    if mode != "constant":
        for axis in range(x.type.rank):
            if low[axis] or high[axis]:
                x = _take_positions(ctx, x, axis, PAD_MODES[mode](np.arange(-low[axis], x.type.shape[axis] + high[axis]), x.type.shape[axis]))
        return [x]
    return [ctx.op("tensor.pad", x, low=tuple(low), high=tuple(high), interior=(0,) * x.type.rank, value=value)]


def _reflect(positions: np.ndarray, size: int) -> np.ndarray:
    period = 2 * (size - 1) or 1
    folded = np.abs(positions) % period
    return np.where(folded >= size, period - folded, folded)


PAD_MODES = {
    "constant": None,
    "edge": lambda positions, size: np.clip(positions, 0, size - 1),  # repeat the border element
    "reflect": _reflect,  # mirror without repeating the border
    "wrap": lambda positions, size: positions % size,  # periodic
}
"""How each Pad mode maps a padded position to a source position (``constant`` uses the pad op)."""


@onnx_op("Trilu")
def trilu(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    k = int(as_array(inputs[1], "Trilu k").reshape(-1)[0]) if optional_input(inputs, 1) is not None else 0
    return [ctx.op("tensor.triu" if attributes(node).get("upper", 1) else "tensor.tril", inputs[0], k=k)]
