"""A Python int attribute traced as a number that changes, as ``torch.compile``'s automatic dynamic ints.

TD3's ``self.total_it += 1`` then ``if self.total_it % self.policy_freq == 0:`` changes the counter at every call. Once
``kiln.compile`` sees such an attribute change (``runtime/dynamic_attributes.py``), its next trace reads it as a
``DynamicInt``: a 0-d int64 graph input fed the attribute's value at each call, behaving as the Python int it stands
for. Arithmetic with ints (``+ - * // % **``, ``abs``, unary minus) stays a ``DynamicInt`` in the graph; a comparison
is a traced bool whose truth, where the Python branches on it, is specialized and guarded (``frontend/value_guards.py``:
one variant per branch, not one per value); with a tensor it promotes as a Python number does. Anything whose result
is no int (``/``, a float operand, ``str()``, ``hash()``) reads the value itself, guarded, so it computes exactly as
Python would, at the cost of a variant per value.

Augmented assignments (``self.total_it += 1``) give a new ``DynamicInt``, as ints are immutable, instead of writing
the tensor in place.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

from kiln.frontend.tensor import Tensor

_INT_RESULTS: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "floordiv": operator.floordiv, "mod": operator.mod,
}
"""Operators whose result is an int for int operands: traced."""
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge, "eq": operator.eq, "ne": operator.ne,
}
"""Comparisons with an int: a traced bool (its truth guarded where the Python reads it)."""
_BY_VALUE: dict[str, Callable[[Any, Any], Any]] = {
    "truediv": operator.truediv, "and": operator.and_, "or": operator.or_, "xor": operator.xor,
    "lshift": operator.lshift, "rshift": operator.rshift, "pow": operator.pow,
}
"""Operators computed on the value itself (guarded): a float result, or rarely a counter's."""


class DynamicInt(Tensor):
    """A traced 0-d int64 tensor standing for a Python int that changes between calls (a counter)."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.wrapped_number = True  # promotes as a Python number (frontend/torch_dtypes.py)

    def python_int(self) -> int:
        """The value now, read through the value guards: the variant holds for this value only."""
        return int(self.item())

    def __neg__(self) -> "DynamicInt":
        return DynamicInt(Tensor.__neg__(self).value)

    def __abs__(self) -> "DynamicInt":
        return DynamicInt(Tensor.abs(self).value)

    def __pos__(self) -> "DynamicInt":
        return self

    def __pow__(self, exponent: Any) -> Any:
        if _is_int(exponent) and not isinstance(exponent, DynamicInt) and exponent >= 0:  # n ** 2: an int
            return DynamicInt(Tensor.__pow__(self, exponent).value)
        return _by_value(operator.pow, self, exponent)

    def __hash__(self) -> int:
        return hash(self.python_int())

    def __str__(self) -> str:
        return str(self.python_int())

    def __format__(self, format_spec: str) -> str:
        return format(self.python_int(), format_spec)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, DynamicInt))


def _by_value(op: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    """``op`` on the Python ints the dynamic operands stand for (each read through the value guards)."""
    left = left.python_int() if isinstance(left, DynamicInt) else left
    right = right.python_int() if isinstance(right, DynamicInt) else right
    return op(left, right)


def _int_result(name: str, op: Callable[[Any, Any], Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    tensor_op, reflected = getattr(Tensor, f"__{name}__"), getattr(Tensor, f"__r{name}__")

    def forward(self: DynamicInt, other: Any) -> Any:
        if _is_int(other):
            return DynamicInt(tensor_op(self, other).value)
        return tensor_op(self, other) if isinstance(other, Tensor) else _by_value(op, self, other)

    def backward(self: DynamicInt, other: Any) -> Any:
        if _is_int(other):
            return DynamicInt(reflected(self, other).value)
        return reflected(self, other) if isinstance(other, Tensor) else _by_value(op, other, self)

    return forward, backward


def _comparison(name: str, op: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    tensor_op = getattr(Tensor, f"__{name}__")

    def compare(self: DynamicInt, other: Any) -> Any:
        if _is_int(other) or isinstance(other, Tensor):
            return tensor_op(self, other)
        if isinstance(other, float):
            return _by_value(op, self, other)
        return NotImplemented  # None, a string: not equal, as an int's

    return compare


def _valued(op: Callable[[Any, Any], Any]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    return (lambda self, other: _by_value(op, self, other)), (lambda self, other: _by_value(op, other, self))


for _name, _op in _INT_RESULTS.items():
    _forward, _backward = _int_result(_name, _op)
    setattr(DynamicInt, f"__{_name}__", _forward)
    setattr(DynamicInt, f"__r{_name}__", _backward)
    setattr(DynamicInt, f"__i{_name}__", _forward)  # n += 1: a new int, not the tensor written in place
for _name, _op in _COMPARISONS.items():
    setattr(DynamicInt, f"__{_name}__", _comparison(_name, _op))
for _name, _op in _BY_VALUE.items():
    _forward, _backward = _valued(_op)
    if _name != "pow":
        setattr(DynamicInt, f"__{_name}__", _forward)
    setattr(DynamicInt, f"__r{_name}__", _backward)
    setattr(DynamicInt, f"__i{_name}__", DynamicInt.__pow__ if _name == "pow" else _forward)

__all__ = ["DynamicInt"]
