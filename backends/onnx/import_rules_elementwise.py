"""ONNX import of the elementwise ops: the unary and binary tables, Div, Pow, the variadic Max, Min, Sum and Mean,
Where, Cast, Identity, Constant, Clip, Not, Reciprocal and Gelu. On known arrays (shape arithmetic) the arithmetic runs
in NumPy while importing, so shapes stay static."""

from __future__ import annotations

from functools import reduce as fold
from typing import Any

import numpy as np

from kiln.backends.onnx.import_rules_common import _plain_known, optional_input, text_attr
from kiln.backends.onnx.importer import ImportContext, OnnxImportError, ShapeValue, as_array, attributes, element_dtype, onnx_op
from kiln.compiler.ir.core import Value
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


@onnx_op("Gelu")
def gelu(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    return [ctx.op("nn.gelu", inputs[0], approximate=text_attr(attributes(node), "approximate", "none"))]
