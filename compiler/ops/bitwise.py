"""Integer bit operations: ``tensor.bitwise_and/or/xor/not`` and the shifts ``tensor.left_shift/right_shift``.

They take int32 or int64 operands of one dtype (broadcast like NumPy) and give that dtype; bool logic keeps its own
ops (``where``/``equal``/``not_equal``), so a bool graph reads as before. No gradient flows through them
(``non_differentiable``, as through a comparison). The shifts mean PyTorch's (and NumPy's) on the CPU for every count:

- ``left_shift(a, s)``: the bits of ``a`` moved up by ``s`` (two's complement, bits past the top lost); 0 for a count
  below 0 or at least the bit width;
- ``right_shift(a, s)``: the arithmetic shift, ``floor(a / 2^s)``; a count below 0 or at least the bit width shifts
  by ``width - 1`` (0 for ``a >= 0``, -1 below).

>>> from kiln.compiler.ir.types import TensorType, DType
>>> bitwise_shape("tensor.bitwise_and")(TensorType((2, 1), DType.i32), TensorType((3,), DType.i32))
TensorType(shape=(2, 3), dtype=<DType.i32: 'i32'>)
"""

from __future__ import annotations

from typing import Callable

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.registry import register_op
from kiln.compiler.ops.tensor import _broadcast, _same_dtype

BINARY_BITWISE = ("bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift")
INTEGER_DTYPES = (DType.u8, DType.i8, DType.i16, DType.i32, DType.i64)
BIT_WIDTHS = {DType.u8: 8, DType.i8: 8, DType.i16: 16, DType.i32: 32, DType.i64: 64}
"""The bits of each integer dtype: shift counts outside ``[0, width)`` take the rules above."""


def _integer_operand(op: str, x: TensorType) -> TensorType:
    if x.dtype not in INTEGER_DTYPES:
        raise ShapeError(f"{op} needs integer operands (uint8, int8, int16, int32 or int64), got {x}; bool logic is tensor.where/equal/not_equal")
    return x


def bitwise_shape(op: str) -> Callable[..., TensorType]:
    """The shape rule of a binary bit op: one integer dtype, broadcast shapes."""
    def shape(x: TensorType, y: TensorType) -> TensorType:
        dtype = _same_dtype(op, _integer_operand(op, x), _integer_operand(op, y))
        return TensorType(_broadcast(op, x, y), dtype)

    return shape


for _name in BINARY_BITWISE:
    register_op(f"tensor.{_name}", traits={"elementwise", "non_differentiable"})(bitwise_shape(f"tensor.{_name}"))
register_op("tensor.bitwise_not", traits={"elementwise", "non_differentiable"})(
    lambda x: _integer_operand("tensor.bitwise_not", x))
