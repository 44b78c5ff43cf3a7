"""The ONNX import table: one short handler per ONNX op type.

A handler gets the import context, the node and its inputs (each a kiln
``Value``, a known NumPy array or a ``ShapeValue``) and returns its outputs.
"""

from __future__ import annotations

import math
from functools import reduce as fold
from typing import Any

import numpy as np

from kiln.backends.onnx.importer import (
    ImportContext,
    OnnxImportError,
    ShapeValue,
    as_array,
    as_dims,
    attributes,
    element_dtype,
    known,
    onnx_op,
)
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import broadcast_shapes, is_float_array_dtype, normalize_axes
from kiln.compiler.ops.registry import OPS

_UNARY = {
    "Neg": "tensor.neg", "Exp": "tensor.exp", "Log": "tensor.log", "Tanh": "tensor.tanh", "Sigmoid": "tensor.sigmoid",
    "Relu": "tensor.relu", "Sqrt": "tensor.sqrt", "Abs": "tensor.abs", "Erf": "tensor.erf", "Sin": "tensor.sin",
    "Cos": "tensor.cos", "Floor": "tensor.floor", "Ceil": "tensor.ceil", "Round": "tensor.round", "Atan": "tensor.atan",
    "Asin": "tensor.asin", "Acos": "tensor.acos", "Det": "linalg.det",
}
_BINARY = {
    "Add": ("tensor.add", np.add), "Sub": ("tensor.sub", np.subtract), "Mul": ("tensor.mul", np.multiply),
    "Equal": ("tensor.equal", np.equal), "Less": ("tensor.less", np.less), "LessOrEqual": ("tensor.less_equal", np.less_equal),
    "Greater": ("tensor.greater", np.greater), "GreaterOrEqual": ("tensor.greater_equal", np.greater_equal),
}


def _unary(kiln_op: str):
    return lambda ctx, node, inputs: [ctx.op(kiln_op, inputs[0])]


def _binary(kiln_op: str, numpy_fn: Any):
    def handle(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
        if all(_plain_known(i) for i in inputs):
            return [numpy_fn(*[as_array(i, node.op_type) for i in inputs])]  # shape arithmetic stays static
        return [ctx.op(kiln_op, *inputs)]

    return handle


def text_attr(attrs: dict, key: str, default: str) -> str:
    """A string attribute (ONNX stores them as bytes)."""
    value = attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else value


def optional_input(inputs: list[Any], index: int) -> Any:
    """An optional input: ``None`` when absent or left empty."""
    return inputs[index] if len(inputs) > index else None


def _int64_labels(ctx: ImportContext, indices: Any, size: int) -> Value:
    """Indices as int64 with negative ones counted from ``size`` (ONNX allows both)."""
    labels = ctx.value(indices)
    if labels.type.dtype.name != "i64":
        labels = ctx.op("tensor.cast", labels, dtype="i64")
    negative = ctx.op("tensor.less", labels, np.array(0, np.int64))
    return ctx.op("tensor.where", negative, ctx.op("tensor.add", labels, np.array(size, np.int64)), labels)


def _classes_to_axis(ctx: ImportContext, x: Value, axis: int) -> Value:
    """Move the last axis (one_hot's classes) to ``axis``."""
    rank = x.type.rank
    if axis % rank == rank - 1:
        return x
    perm = list(range(rank - 1))
    perm.insert(axis % rank, rank - 1)
    return ctx.op("tensor.transpose", x, perm=tuple(perm))


def _plain_known(item: Any) -> bool:
    return known(item) and not (isinstance(item, ShapeValue) and not all(isinstance(d, int) for d in item.dims))


for _type, _op in _UNARY.items():
    if _op in OPS:
        onnx_op(_type)(_unary(_op))
for _type, (_op, _fn) in _BINARY.items():
    onnx_op(_type)(_binary(_op, _fn))


@onnx_op("Div")
def div(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    x, y = inputs
    if all(_plain_known(i) for i in inputs):  # shape arithmetic stays static; integers truncate toward zero
        a, b = (as_array(i, "Div") for i in inputs)
        return [np.fix(np.true_divide(a, b)).astype(a.dtype) if a.dtype.kind in "iu" else np.divide(a, b)]
    dtype = _dtype_of(ctx, x)
    if not dtype.is_int:
        return [ctx.op("tensor.div", x, y)]
    # integer Div truncates toward zero: divide in f64 (exact below 2**53), cast back (casts truncate)
    quotient = ctx.op("tensor.div", ctx.op("tensor.cast", x, dtype="f64"), ctx.op("tensor.cast", y, dtype="f64"))
    return [ctx.op("tensor.cast", quotient, dtype=dtype)]


def _dtype_of(ctx: ImportContext, item: Any):
    return ctx.value(item).type.dtype if not isinstance(item, Value) else item.type.dtype


@onnx_op("Pow")
def power(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    base, exponent = (ctx.value(i) for i in inputs)
    if exponent.type.dtype != base.type.dtype:
        exponent = ctx.op("tensor.cast", exponent, dtype=base.type.dtype)
    return [ctx.op("tensor.pow", base, exponent)]


def _variadic(kiln_op: str, numpy_fn: Any):
    def handle(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
        if all(_plain_known(i) for i in inputs):  # shape arithmetic stays static
            return [fold(numpy_fn, [as_array(i, node.op_type) for i in inputs])]
        return [fold(lambda a, b: ctx.op(kiln_op, a, b), [ctx.value(i) for i in inputs])]

    return handle


onnx_op("Max")(_variadic("tensor.maximum", np.maximum))
onnx_op("Min")(_variadic("tensor.minimum", np.minimum))
onnx_op("Sum")(_variadic("tensor.add", np.add))


@onnx_op("Mean")
def mean(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    total = ctx.value(_variadic("tensor.add", np.add)(ctx, node, inputs)[0])
    return [ctx.op("tensor.div", total, np.array(len(inputs), total.type.dtype.numpy))]


@onnx_op("Where")
def where(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    return [ctx.op("tensor.where", *inputs)]


@onnx_op("Cast")
def cast(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    dtype = element_dtype(attributes(node)["to"], f"Cast {node.output[0]!r}")
    if _plain_known(inputs[0]) and dtype.is_int:
        return [np.asarray(as_array(inputs[0], "Cast input")).astype(dtype.numpy)]
    if isinstance(inputs[0], ShapeValue):
        return [inputs[0]]
    return [ctx.op("tensor.cast", inputs[0], dtype=dtype)]


@onnx_op("Identity")
def identity(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    return [inputs[0]]


@onnx_op("Constant")
def constant(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    from onnx import numpy_helper

    attrs = attributes(node)
    if "value" in attrs:
        return [numpy_helper.to_array(attrs["value"])]
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return [np.array(attrs[key], dtype)]
    raise OnnxImportError(f"Constant {node.output[0]!r}: only tensor, float(s) and int(s) values are supported")


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


@onnx_op("Shape")
def shape(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    x = ctx.value(inputs[0])
    attrs = attributes(node)
    axes = list(range(x.type.rank))[slice(attrs.get("start", 0), attrs.get("end"))]
    return [ShapeValue(tuple(x.type.shape[a] for a in axes), x, tuple(axes))]


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


@onnx_op("Softmax", "LogSoftmax")
def softmax(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    if ctx.opset < 13:
        raise OnnxImportError(f"{node.op_type} before opset 13 flattens to 2-D; kiln imports opset >= 13 only")
    kiln_op = "nn.softmax" if node.op_type == "Softmax" else "nn.log_softmax"
    return [ctx.op(kiln_op, inputs[0], axis=attributes(node).get("axis", -1))]


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


@onnx_op("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    # loss_i = -w[y_i] * log_softmax(x)_i[y_i], zero where y_i == ignore_index; mean divides by sum of weights
    attrs = attributes(node)
    scores, labels = ctx.value(inputs[0]), ctx.value(inputs[1])
    weights = optional_input(inputs, 2)
    log_prob = ctx.op("nn.log_softmax", scores, axis=1)
    classes = scores.type.shape[1]
    labels = ctx.op("tensor.cast", labels, dtype="i64") if labels.type.dtype.name != "i64" else labels
    hot = _classes_to_axis(ctx, ctx.op("tensor.one_hot", labels, num_classes=classes, dtype=scores.type.dtype), 1)
    picked = ctx.op("tensor.neg", ctx.op("tensor.reduce_sum", ctx.op("tensor.mul", hot, log_prob), axes=(1,)))
    weight = _sample_weights(ctx, hot, labels, weights, attrs.get("ignore_index"), scores)
    loss = ctx.op("tensor.mul", picked, weight)
    reduction = text_attr(attrs, "reduction", "mean")
    if reduction == "sum":
        loss = ctx.op("tensor.reduce_sum", loss)
    elif reduction == "mean":
        loss = ctx.op("tensor.div", ctx.op("tensor.reduce_sum", loss), ctx.op("tensor.reduce_sum", weight))
    return [loss, log_prob]


def _sample_weights(ctx: ImportContext, hot: Value, labels: Value, weights: Any, ignore_index: Any, scores: Value) -> Value:
    dtype = scores.type.dtype.numpy
    if weights is None:
        weight = ctx.op("tensor.broadcast_to", np.array(1, dtype), shape=labels.type.shape)
    else:
        shape = (1, -1) + (1,) * (hot.type.rank - 2)
        weight = ctx.op("tensor.reduce_sum", ctx.op("tensor.mul", hot, ctx.op("tensor.reshape", weights, shape=tuple(shape))), axes=(1,))
    if ignore_index is None:
        return weight
    kept = ctx.op("tensor.not_equal", labels, np.array(ignore_index, np.int64))
    return ctx.op("tensor.where", kept, weight, np.array(0, dtype))


@onnx_op("Clip")
def clip(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    x = ctx.value(inputs[0])
    low, high = optional_input(inputs, 1), optional_input(inputs, 2)
    if low is not None:
        x = ctx.op("tensor.maximum", x, ctx.op("tensor.cast", low, dtype=x.type.dtype) if isinstance(low, Value) else np.asarray(low, x.type.dtype.numpy))
    if high is not None:
        x = ctx.op("tensor.minimum", x, ctx.op("tensor.cast", high, dtype=x.type.dtype) if isinstance(high, Value) else np.asarray(high, x.type.dtype.numpy))
    return [x]


@onnx_op("Not")
def logical_not(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    # not x = (x == false)
    return [ctx.op("tensor.equal", inputs[0], np.array(False))]


@onnx_op("Reciprocal")
def reciprocal(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    x = ctx.value(inputs[0])
    return [ctx.op("tensor.div", np.array(1, x.type.dtype.numpy), x)]


def refuse(node: Any, why: str) -> OnnxImportError:
    return OnnxImportError(f"{node.op_type} {why} is not supported by kiln's importer")


@onnx_op("Gelu")
def gelu(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    return [ctx.op("nn.gelu", inputs[0], approximate=text_attr(attributes(node), "approximate", "none"))]


@onnx_op("LayerNormalization")
def layer_normalization(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    # y = (x - mean) / sqrt(var + eps) * scale + bias over axes [axis, rank); Mean and InvStdDev as extra outputs
    attrs = attributes(node)
    x = ctx.value(inputs[0])
    axis = attrs.get("axis", -1) % x.type.rank
    axes, eps = tuple(range(axis, x.type.rank)), attrs.get("epsilon", 1e-5)
    mean = ctx.op("tensor.reduce_mean", x, axes=axes, keepdims=True)
    centered = ctx.op("tensor.sub", x, mean)
    variance = ctx.op("tensor.reduce_mean", ctx.op("tensor.mul", centered, centered), axes=axes, keepdims=True)
    inverse_std = ctx.op("tensor.div", np.array(1, x.type.dtype.numpy), ctx.op("tensor.sqrt", ctx.op("tensor.add", variance, np.array(eps, x.type.dtype.numpy))))
    y = ctx.op("tensor.mul", ctx.op("tensor.mul", centered, inverse_std), inputs[1])
    if optional_input(inputs, 2) is not None:
        y = ctx.op("tensor.add", y, inputs[2])
    return [y, mean, inverse_std]


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


def _take_positions(ctx: ImportContext, x: Value, axis: int, positions: np.ndarray) -> Value:
    """``x`` re-indexed along ``axis`` by static positions (reversal, edge/reflect/wrap padding)."""
    return ctx.op("tensor.take", x, np.asarray(positions, np.int64), axis=axis)


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


@onnx_op("Trilu")
def trilu(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    k = int(as_array(inputs[1], "Trilu k").reshape(-1)[0]) if optional_input(inputs, 1) is not None else 0
    return [ctx.op("tensor.triu" if attributes(node).get("upper", 1) else "tensor.tril", inputs[0], k=k)]


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
