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
from kiln.compiler.ir.types import broadcast_shapes, normalize_axes
from kiln.compiler.ops.registry import OPS

_UNARY = {
    "Neg": "tensor.neg", "Exp": "tensor.exp", "Log": "tensor.log", "Tanh": "tensor.tanh", "Sigmoid": "tensor.sigmoid",
    "Relu": "tensor.relu", "Sqrt": "tensor.sqrt", "Abs": "tensor.abs", "Erf": "tensor.erf",
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
            return [numpy_fn(*[np.asarray(i) for i in inputs])]  # shape arithmetic stays static
        return [ctx.op(kiln_op, *inputs)]

    return handle


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
    if _dtype_of(ctx, x).is_int:
        raise OnnxImportError("integer Div (truncating) has no kiln op; cast to float first")
    return [ctx.op("tensor.div", x, y)]


def _dtype_of(ctx: ImportContext, item: Any):
    return ctx.value(item).type.dtype if not isinstance(item, Value) else item.type.dtype


@onnx_op("Pow")
def power(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    base, exponent = (ctx.value(i) for i in inputs)
    if exponent.type.dtype != base.type.dtype:
        exponent = ctx.op("tensor.cast", exponent, dtype=base.type.dtype)
    return [ctx.op("tensor.pow", base, exponent)]


def _variadic(kiln_op: str):
    def handle(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
        return [fold(lambda a, b: ctx.op(kiln_op, a, b), [ctx.value(i) for i in inputs])]

    return handle


onnx_op("Max")(_variadic("tensor.maximum"))
onnx_op("Min")(_variadic("tensor.minimum"))
onnx_op("Sum")(_variadic("tensor.add"))


@onnx_op("Mean")
def mean(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    total = _variadic("tensor.add")(ctx, node, inputs)[0]
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
    """Only over shapes (``numel``): a product of dims, symbolic ones included."""
    item = inputs[0]
    if isinstance(item, ShapeValue) and item.source is not None and not all(isinstance(d, int) for d in item.dims):
        return [ctx.op("tensor.numel", item.source, axes=item.axes, dtype="i64")]
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
    off, on = (np.asarray(v) for v in as_array(values, "OneHot values").reshape(-1))
    labels = ctx.op("tensor.cast", indices, dtype="i64") if _dtype_of(ctx, indices).name != "i64" else ctx.value(indices)
    wrapped = ctx.op("tensor.where", ctx.op("tensor.less", labels, np.array(0, np.int64)), ctx.op("tensor.add", labels, np.array(depth, np.int64)), labels)
    dtype = values.dtype if isinstance(values, np.ndarray) else np.asarray(values).dtype
    hot = ctx.op("tensor.one_hot", wrapped, num_classes=depth, dtype=element_dtype_numpy(dtype))
    scaled = ctx.op("tensor.add", ctx.op("tensor.mul", hot, np.asarray(on - off, dtype)), np.asarray(off, dtype))
    rank = scaled.type.rank
    axis = attributes(node).get("axis", -1) % rank
    if axis == rank - 1:
        return [scaled]
    perm = list(range(rank - 1))
    perm.insert(axis, rank - 1)
    return [ctx.op("tensor.transpose", scaled, perm=tuple(perm))]


def element_dtype_numpy(dtype: np.dtype) -> str:
    return np.dtype(dtype).name


@onnx_op("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    # loss_i = -w[y_i] * log_softmax(x)_i[y_i], zero where y_i == ignore_index; mean divides by sum of weights
    attrs = attributes(node)
    scores, labels = ctx.value(inputs[0]), ctx.value(inputs[1])
    weights = inputs[2] if len(inputs) > 2 else None
    log_prob = ctx.op("nn.log_softmax", scores, axis=1)
    classes = scores.type.shape[1]
    labels = ctx.op("tensor.cast", labels, dtype="i64") if labels.type.dtype.name != "i64" else labels
    hot = _class_axis_first(ctx, ctx.op("tensor.one_hot", labels, num_classes=classes, dtype=scores.type.dtype))
    picked = ctx.op("tensor.neg", ctx.op("tensor.reduce_sum", ctx.op("tensor.mul", hot, log_prob), axes=(1,)))
    weight = _sample_weights(ctx, hot, labels, weights, attrs.get("ignore_index"), scores)
    loss = ctx.op("tensor.mul", picked, weight)
    reduction = attrs.get("reduction", b"mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    if reduction == "sum":
        loss = ctx.op("tensor.reduce_sum", loss)
    elif reduction == "mean":
        loss = ctx.op("tensor.div", ctx.op("tensor.reduce_sum", loss), ctx.op("tensor.reduce_sum", weight))
    return [loss, log_prob]


def _class_axis_first(ctx: ImportContext, hot: Value) -> Value:
    """one_hot puts classes last; SoftmaxCrossEntropyLoss has them at axis 1."""
    rank = hot.type.rank
    if rank == 2:
        return hot
    return ctx.op("tensor.transpose", hot, perm=(0, rank - 1) + tuple(range(1, rank - 1)))


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
    low = inputs[1] if len(inputs) > 1 else None
    high = inputs[2] if len(inputs) > 2 else None
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
