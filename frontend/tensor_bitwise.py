"""PyTorch's bit operators on tensors: ``&``, ``|``, ``^``, ``~``, ``<<``, ``>>``, their reflected (``3 & x``) and
in-place (``x &= m``) forms, and the methods ``bitwise_and/or/xor/not``, ``bitwise_left_shift/right_shift`` (with
``name_`` in place). ``TorchMethods`` (``tensor_methods.py``) inherits them.

Operands are promoted as PyTorch's ``result_type``: bool < int < float by category; dimensioned tensors decide
first, then 0-d tensors, then Python numbers, a later group winning only with a higher category (``x_i32 & 5`` and
``x_i32 & torch.tensor(5)`` stay int32, ``mask & 1`` is int64). Integers compute in the ``tensor.bitwise_*`` and
shift ops (``compiler/ops/bitwise.py``); bools in the logic of ``where``/``equal``/``not_equal`` as before. A float
operand is PyTorch's error (``"bitwise_and_cpu" not implemented for 'Float'``), and so is a bool shift.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

from kiln.compiler.ir.types import DType
from kiln.frontend.torch_dtypes import get_default_dtype, promote_types
from kiln.frontend.trace import located_error

KERNEL_NAMES = {"bitwise_and": "bitwise_and_cpu", "bitwise_or": "bitwise_or_cpu", "bitwise_xor": "bitwise_xor_cpu",
                "bitwise_not": "bitwise_not_cpu", "left_shift": "lshift_cpu", "right_shift": "rshift_cpu"}
"""PyTorch's kernel names, which its errors for an unsupported dtype quote."""
TORCH_NAMES = {DType.bool: "Bool", DType.u8: "Byte", DType.i8: "Char", DType.i16: "Short", DType.i32: "Int", DType.i64: "Long",
               DType.f16: "Half", DType.bf16: "BFloat16",
               DType.f32: "Float", DType.f64: "Double"}
"""Each dtype as PyTorch's errors name it."""
LOGIC = {"bitwise_and": "logical_and", "bitwise_or": "logical_or", "bitwise_xor": "logical_xor"}
"""The bool forms of the bit ops."""
_ORDER = (DType.bool, DType.u8, DType.i8, DType.i16, DType.i32, DType.i64, DType.f16, DType.bf16, DType.f32, DType.f64)


_TENSOR: list[type] = []
"""``Tensor``, looked up once (it imports this module's users)."""


def _tensor_class() -> type:
    if not _TENSOR:
        from kiln.frontend.tensor import Tensor

        _TENSOR.append(Tensor)
    return _TENSOR[0]


def _apply(*args: Any, **attrs: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply(*args, **attrs)


_CATEGORIES = {dtype: 2 if dtype.is_float else 0 if dtype is DType.bool else 1 for dtype in _ORDER}
"""bool 0, integers 1, floats 2: a result takes a later group's dtype only of a higher category."""


def _category(dtype: DType) -> int:
    return _CATEGORIES[dtype]


def _number_dtype(number: Any) -> DType:
    if isinstance(number, bool):
        return DType.bool
    return DType.i64 if type(number) is int or isinstance(number, numbers.Integral) else get_default_dtype()


def result_dtype(*operands: Any) -> DType:
    """PyTorch's ``torch.result_type`` over tensors and Python numbers (see the module docstring)."""
    tensor = _tensor_class()
    dtypes = {o.dtype for o in operands if isinstance(o, tensor)}
    if len(dtypes) == 1:  # the common case: the tensors' one dtype, unless a number has a higher category
        (shared,) = dtypes
        numbers = [_number_dtype(o) for o in operands if not isinstance(o, tensor)]
        return max([d for d in numbers if _CATEGORIES[d] > _CATEGORIES[shared]], key=_ORDER.index, default=shared)
    groups = ([o.dtype for o in operands if isinstance(o, tensor) and o.ndim > 0],
              [o.dtype for o in operands if isinstance(o, tensor) and o.ndim == 0],
              [_number_dtype(o) for o in operands if not isinstance(o, tensor)])
    result = None
    for group in groups:
        widest = functools.reduce(promote_types, group) if group else None  # uint8 and int8 meet in int16
        if widest is not None and (result is None or _category(widest) > _category(result)):
            result = widest
    return result


def _is_operand(value: Any) -> bool:
    return isinstance(value, (_tensor_class(), int, float)) or isinstance(value, numbers.Real)


def _unsupported(name: str, dtype: DType) -> Exception:
    return located_error(f'"{KERNEL_NAMES[name]}" not implemented for \'{TORCH_NAMES[dtype]}\' (as in PyTorch): bit '
                         f"operations take integer or bool tensors, not {dtype}; cast first (x.long(), x.bool())")


def binary_bitwise(name: str, x: Any, y: Any) -> Any:
    """``tensor.<name>`` of two operands (one a tensor), promoted as PyTorch; bool logic for bit ops on bools."""
    dtype = result_dtype(x, y)
    if dtype is DType.bool and name in LOGIC:
        tensor, other = (x, y) if isinstance(x, _tensor_class()) else (y, x)  # commutative: the tensor's method
        return getattr(tensor, LOGIC[name])(other)
    if _category(dtype) != 1:
        raise _unsupported(name, dtype)
    tensor = _tensor_class()
    return _apply(f"tensor.{name}", *(o.to(dtype) if isinstance(o, tensor) and o.dtype is not dtype else o for o in (x, y)))


def bitwise_not(x: Any) -> Any:
    if x.dtype is DType.bool:
        return x.logical_not()
    if x.dtype.is_float:
        raise _unsupported("bitwise_not", x.dtype)
    return _apply("tensor.bitwise_not", x)


def _can_cast(source: DType, target: DType) -> bool:
    """PyTorch's ``can_cast``: never to a lower category (float into an int, an int into a bool)."""
    return _category(source) <= _category(target)


def in_place_bitwise(name: str, x: Any, y: Any, method: str) -> Any:
    """``x.<method>(y)``: the bit op written into ``x`` (its shape and dtype), refused as PyTorch where the promoted
    result cannot be cast into ``x``'s dtype."""
    from kiln.frontend.tensor_inplace import in_place

    dtype = result_dtype(x, y)
    if not _can_cast(dtype, x.dtype):
        raise located_error(f"{method}: result type {TORCH_NAMES[dtype]} can't be cast to the desired output type "
                            f"{TORCH_NAMES[x.dtype]} (as in PyTorch); use the out-of-place form, or cast the tensor first")
    return in_place(x, method, lambda tensor: binary_bitwise(name, tensor, y))


class BitwiseMethods:
    """The bit operators and methods; see the module docstring."""

    def bitwise_and(self, other: Any) -> Any:
        return binary_bitwise("bitwise_and", self, other)

    def bitwise_or(self, other: Any) -> Any:
        return binary_bitwise("bitwise_or", self, other)

    def bitwise_xor(self, other: Any) -> Any:
        return binary_bitwise("bitwise_xor", self, other)

    def bitwise_left_shift(self, other: Any) -> Any:
        """``self << other``: 0 for a count below 0 or at least the bit width, as PyTorch's."""
        return binary_bitwise("left_shift", self, other)

    def bitwise_right_shift(self, other: Any) -> Any:
        """``self >> other``, arithmetic: the sign (0 or -1) for a count below 0 or at least the bit width."""
        return binary_bitwise("right_shift", self, other)

    def bitwise_not(self) -> Any:
        return bitwise_not(self)

    def bitwise_and_(self, other: Any) -> Any:
        return in_place_bitwise("bitwise_and", self, other, "bitwise_and_")

    def bitwise_or_(self, other: Any) -> Any:
        return in_place_bitwise("bitwise_or", self, other, "bitwise_or_")

    def bitwise_xor_(self, other: Any) -> Any:
        return in_place_bitwise("bitwise_xor", self, other, "bitwise_xor_")

    def bitwise_left_shift_(self, other: Any) -> Any:
        return in_place_bitwise("left_shift", self, other, "bitwise_left_shift_")

    def bitwise_right_shift_(self, other: Any) -> Any:
        return in_place_bitwise("right_shift", self, other, "bitwise_right_shift_")

    def bitwise_not_(self) -> Any:
        from kiln.frontend.tensor_inplace import in_place

        return in_place(self, "bitwise_not_", bitwise_not)

    def __invert__(self) -> Any:
        dtype = self.dtype  # type: ignore[attr-defined]
        if dtype.is_float:
            raise located_error("~ (operator.invert) is only implemented on integer and Boolean-type tensors (as in "
                                f"PyTorch), got a {dtype} tensor; compare first (x > 0) or cast (x.long())")
        return bitwise_not(self)

    def __and__(self, other: Any) -> Any:
        return binary_bitwise("bitwise_and", self, other) if _is_operand(other) else NotImplemented

    def __rand__(self, other: Any) -> Any:
        return binary_bitwise("bitwise_and", other, self) if _is_operand(other) else NotImplemented

    def __or__(self, other: Any) -> Any:
        return binary_bitwise("bitwise_or", self, other) if _is_operand(other) else NotImplemented

    def __ror__(self, other: Any) -> Any:
        return binary_bitwise("bitwise_or", other, self) if _is_operand(other) else NotImplemented

    def __xor__(self, other: Any) -> Any:
        return binary_bitwise("bitwise_xor", self, other) if _is_operand(other) else NotImplemented

    def __rxor__(self, other: Any) -> Any:
        return binary_bitwise("bitwise_xor", other, self) if _is_operand(other) else NotImplemented

    def __lshift__(self, other: Any) -> Any:
        return binary_bitwise("left_shift", self, other) if _is_operand(other) else NotImplemented

    def __rlshift__(self, other: Any) -> Any:
        return binary_bitwise("left_shift", other, self) if _is_operand(other) else NotImplemented

    def __rshift__(self, other: Any) -> Any:
        return binary_bitwise("right_shift", self, other) if _is_operand(other) else NotImplemented

    def __rrshift__(self, other: Any) -> Any:
        return binary_bitwise("right_shift", other, self) if _is_operand(other) else NotImplemented

    __iand__, __ior__, __ixor__ = bitwise_and_, bitwise_or_, bitwise_xor_
    __ilshift__, __irshift__ = bitwise_left_shift_, bitwise_right_shift_
