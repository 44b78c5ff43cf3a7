"""The ONNX lowering table: each kiln op as standard ONNX nodes (opset 20).

An emitter gets the export context, the op and its operand names and returns
the names of its results. Composites without an emitter are expanded into
primitives before export, so every graph kiln can run exports.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kiln.backends.base import LoweringTable
from kiln.compiler.ir.core import Op
from kiln.compiler.ir.types import DType, normalize_axes

ONNX = LoweringTable("onnx")
Emitter = Callable[[Any, Op, list[str]], list[str]]

_ONE_TO_ONE = {
    "tensor.neg": "Neg",
    "tensor.exp": "Exp",
    "tensor.log": "Log",
    "tensor.tanh": "Tanh",
    "tensor.relu": "Relu",
    "tensor.sqrt": "Sqrt",
    "tensor.add": "Add",
    "tensor.sub": "Sub",
    "tensor.mul": "Mul",
    "tensor.div": "Div",
    "tensor.pow": "Pow",
    "tensor.maximum": "Max",
    "tensor.minimum": "Min",
    "tensor.equal": "Equal",
    "tensor.less": "Less",
    "tensor.less_equal": "LessOrEqual",
    "tensor.greater": "Greater",
    "tensor.greater_equal": "GreaterOrEqual",
    "tensor.matmul": "MatMul",
}


def _one_to_one(onnx_type: str) -> Emitter:
    return lambda ctx, op, inputs: [ctx.node(onnx_type, inputs)]


for _name, _onnx_type in _ONE_TO_ONE.items():
    ONNX.register(_name)(_one_to_one(_onnx_type))


@ONNX.register("tensor.not_equal")
def not_equal(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Not", [ctx.node("Equal", inputs)])]


@ONNX.register("tensor.where")
def where(ctx, op: Op, inputs: list[str]) -> list[str]:
    if op.result.type.dtype is not DType.bool:
        return [ctx.node("Where", inputs)]
    # onnxruntime has no bool Where (masks joined with | and &): (c and a) or (not c and b)
    condition, chosen, other = inputs
    return [ctx.node("Or", [ctx.node("And", [condition, chosen]), ctx.node("And", [ctx.node("Not", [condition]), other])])]


@ONNX.register("tensor.cast")
def cast(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Cast", inputs, to=ctx.onnx_dtype(op.attrs["dtype"]))]


@ONNX.register("tensor.constant")
def constant(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.constant(op.attrs["value"])]


def reduce_emitter(onnx_type: str) -> Emitter:
    def emit(ctx, op: Op, inputs: list[str]) -> list[str]:
        x = op.operands[0]
        axes = op.attrs["axes"]
        if axes is not None and not normalize_axes(axes, x.type.rank):
            return [ctx.node("Identity", inputs)]  # no axes: kiln's reduction is the identity, ONNX's empty axes reduce all
        extra = [] if axes is None else [ctx.constant(np.array(normalize_axes(axes, x.type.rank), np.int64))]
        return [ctx.node(onnx_type, inputs + extra, keepdims=int(op.attrs["keepdims"]))]

    return emit


ONNX.register("tensor.reduce_sum")(reduce_emitter("ReduceSum"))
ONNX.register("tensor.reduce_mean")(reduce_emitter("ReduceMean"))
ONNX.register("tensor.reduce_max")(reduce_emitter("ReduceMax"))
ONNX.register("tensor.reduce_prod")(reduce_emitter("ReduceProd"))


@ONNX.register("tensor.random_uniform")
def random_uniform(ctx, op: Op, inputs: list[str]) -> list[str]:
    # ONNX cannot draw NumPy's Philox-4x64 stream: the draw becomes a graph input, filled by whoever runs the model (export.py)
    return [ctx.random_input(op, inputs[0])]


@ONNX.register("tensor.reshape")
def reshape(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Reshape", [inputs[0], ctx.shape_tensor(op.result.type.shape)])]


@ONNX.register("tensor.broadcast_to")
def broadcast_to(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Expand", [inputs[0], ctx.shape_tensor(op.result.type.shape)])]


@ONNX.register("tensor.transpose")
def transpose(ctx, op: Op, inputs: list[str]) -> list[str]:
    perm = op.attrs["perm"] or tuple(reversed(range(op.operands[0].type.rank)))
    return [ctx.node("Transpose", inputs, perm=list(perm))]


@ONNX.register("tensor.one_hot")
def one_hot(ctx, op: Op, inputs: list[str]) -> list[str]:
    # onnxruntime's OneHot takes int64 indices to int64 or float32 (not bool or float64): those come from int64 by a Cast
    depth = ctx.constant(np.array(op.attrs["num_classes"], np.int64))
    indices = inputs[0] if op.operands[0].type.dtype is DType.i64 else ctx.node("Cast", inputs, to=ctx.onnx_dtype(DType.i64))
    direct = op.attrs["dtype"] in (DType.i64, DType.f32)
    values = ctx.constant(np.array([0, 1], dtype=op.attrs["dtype"].numpy if direct else np.int64))
    hot = ctx.node("OneHot", [indices, depth, values], axis=-1)
    return [hot if direct else ctx.node("Cast", [hot], to=ctx.onnx_dtype(op.attrs["dtype"]))]


@ONNX.register("tensor.check_index")
def check_index(ctx, op: Op, inputs: list[str]) -> list[str]:
    # ONNX has no run-time assertion: the index passes unchecked (onnxruntime's Gather rejects one past the end)
    return [ctx.node("Identity", inputs)]


@ONNX.register("tensor.numel")
def numel(ctx, op: Op, inputs: list[str]) -> list[str]:
    # numel = prod(shape(x)[axes])
    shape = ctx.node("Shape", inputs)
    axes = op.attrs["axes"]
    if axes is not None:
        shape = ctx.node("Gather", [shape, ctx.constant(np.array(normalize_axes(axes, op.operands[0].type.rank), np.int64))])
    count = ctx.node("ReduceProd", [shape], keepdims=0)
    return [ctx.node("Cast", [count], to=ctx.onnx_dtype(op.attrs["dtype"]))]


@ONNX.register("nn.softmax")
def softmax(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("Softmax", inputs, axis=op.attrs["axis"])]


@ONNX.register("nn.log_softmax")
def log_softmax(ctx, op: Op, inputs: list[str]) -> list[str]:
    return [ctx.node("LogSoftmax", inputs, axis=op.attrs["axis"])]


@ONNX.register("optim.sgd_update")
def sgd_update(ctx, op: Op, inputs: list[str]) -> list[str]:
    # p' = p - lr * g, a float64 lr read in p's dtype (as PyTorch's kernel reads its Python float)
    param, grad, lr = inputs
    dtype = op.operands[0].type.dtype
    if op.operands[2].type.dtype is not dtype:
        lr = ctx.node("Cast", [lr], to=ctx.onnx_dtype(dtype))
    return [ctx.node("Sub", [param, ctx.node("Mul", [lr, grad])])]
