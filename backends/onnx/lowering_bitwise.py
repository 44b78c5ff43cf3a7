"""ONNX emitters of the integer bit ops (``compiler/ops/bitwise.py``): BitwiseAnd/Or/Xor/Not (opset 18) as they are;
the signed shifts through BitShift, which ONNX defines on unsigned integers only.

A left shift is the same bits whether they are read signed or not, so the operand goes through its unsigned type
and back (Cast keeps the bits, modulo 2^bits). The arithmetic right shift of a negative ``a`` is ``~(~a >> s)``:
``~a`` is non-negative, where the logical and the arithmetic shifts agree. Counts outside ``[0, bits)`` take
PyTorch's results by ``Where`` (left: 0; right: a shift by ``bits - 1``, 0 for uint8), never reaching BitShift, whose result
there ONNX leaves unspecified.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.onnx.lowering import ONNX
from kiln.compiler.ir.core import Op
from kiln.compiler.ir.types import DType
from kiln.compiler.ops.bitwise import BIT_WIDTHS

_ONE_TO_ONE = {"tensor.bitwise_and": "BitwiseAnd", "tensor.bitwise_or": "BitwiseOr", "tensor.bitwise_xor": "BitwiseXor",
               "tensor.bitwise_not": "BitwiseNot"}
UNSIGNED = {np.dtype(np.uint8): np.uint8, np.dtype(np.int8): np.uint8, np.dtype(np.int16): np.uint16,
            np.dtype(np.int32): np.uint32, np.dtype(np.int64): np.uint64}


def _one_to_one(onnx_type: str):
    return lambda ctx, op, inputs: [ctx.node(onnx_type, inputs)]


for _name, _onnx_type in _ONE_TO_ONE.items():
    ONNX.register(_name)(_one_to_one(_onnx_type))


def _shift_bits(ctx, op: Op, value: str, count: str, direction: str) -> str:
    """``value`` (signed, >= 0 for RIGHT) shifted by ``count`` (in range) through BitShift on their unsigned type."""
    signed = op.result.type.dtype
    unsigned = ctx.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(UNSIGNED[np.dtype(signed.numpy)]))
    shifted = ctx.node("BitShift", [ctx.node("Cast", [value], to=unsigned), ctx.node("Cast", [count], to=unsigned)],
                       direction=direction)
    return ctx.node("Cast", [shifted], to=ctx.onnx_dtype(signed))


def _in_range(ctx, op: Op, count: str) -> str:
    """Where ``0 <= count < bits``."""
    dtype = op.result.type.dtype
    bits = ctx.constant(np.array(BIT_WIDTHS[dtype], dtype.numpy))
    at_least_zero = ctx.node("GreaterOrEqual", [count, ctx.constant(np.array(0, dtype.numpy))])
    return ctx.node("And", [at_least_zero, ctx.node("Less", [count, bits])])


@ONNX.register("tensor.left_shift")
def left_shift(ctx, op: Op, inputs: list[str]) -> list[str]:
    # a << s for 0 <= s < bits, else 0
    value, count = inputs
    zero = ctx.constant(np.array(0, op.result.type.dtype.numpy))
    inside = _in_range(ctx, op, count)
    shifted = _shift_bits(ctx, op, value, ctx.node("Where", [inside, count, zero]), "LEFT")
    return [ctx.node("Where", [inside, shifted, zero])]


@ONNX.register("tensor.right_shift")
def right_shift(ctx, op: Op, inputs: list[str]) -> list[str]:
    # a >> s = ~(~a >> s) for a < 0 (logical on ~a >= 0); counts outside [0, bits) shift by bits - 1 (uint8: give 0)
    value, count = inputs
    dtype = op.result.type.dtype
    if dtype is DType.u8:  # no sign: a >> s for s in range, else 0
        inside, zero = _in_range(ctx, op, count), ctx.constant(np.array(0, dtype.numpy))
        return [ctx.node("Where", [inside, _shift_bits(ctx, op, value, ctx.node("Where", [inside, count, zero]), "RIGHT"), zero])]
    last = ctx.constant(np.array(BIT_WIDTHS[dtype] - 1, dtype.numpy))
    count = ctx.node("Where", [_in_range(ctx, op, count), count, last])
    negative = ctx.node("Less", [value, ctx.constant(np.array(0, dtype.numpy))])
    magnitude = ctx.node("Where", [negative, ctx.node("BitwiseNot", [value]), value])
    shifted = _shift_bits(ctx, op, magnitude, count, "RIGHT")
    return [ctx.node("Where", [negative, ctx.node("BitwiseNot", [shifted]), shifted])]
