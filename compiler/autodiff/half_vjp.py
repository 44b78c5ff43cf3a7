"""The VJP of a half-precision op, computed in float32 and rounded once per cotangent.

PyTorch's backward of a float16/bfloat16 op is one kernel (``log_softmax_backward``, ``gelu_backward``...) computing
in float32 and rounding each gradient once. A kiln VJP rule emits several primitive ops; run on half values, each of
them would round (``widen-half`` rounds per op), and ``g - softmax(x) * sum(g)`` would cancel catastrophically after
two roundings. So the pass runs the rule on float32 casts of the op's operands, results and cotangent, and rounds
each cotangent back to its operand's dtype once:

```
%dx32 = ... the rule's ops, all float32 ...
%dx = "tensor.cast"(%dx32) {dtype = bf16}
```

An elementwise op's cotangent for a broadcast operand is rounded first, then summed to the operand's shape in
float32 and rounded again (``summed_in_float32``), as torch's elementwise backward kernel and ``sum_to_size`` do.

Ops that only move elements (``EXACT_IN_HALF``: transposes, reshapes, casts...) keep their rule as it is: their
cotangents are exact in half. So does an op with a nested graph (``custom.vjp``): its user-written backward is typed
in the half dtype.
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.passes.widen_half import EXACT_IN_HALF, touches_half


class WidenedOp:
    """What a VJP rule reads of an op (name, operands, results, attrs), with every half value cast to float32."""

    def __init__(self, op: Op, operands: list[Value], results: list[Value]):
        self.name, self.attrs, self.location, self.region = op.name, op.attrs, op.location, op.region
        self.operands, self.results = operands, results

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise ValueError(f"{self.name} has {len(self.results)} results; use .results")
        return self.results[0]


def computes_in_half(op: Op) -> bool:
    """Whether ``op``'s VJP should run widened: it reads or makes a half value and does more than move elements."""
    if op.name in EXACT_IN_HALF or any(isinstance(value, Graph) for value in op.attrs.values()):
        return False  # an op with a nested graph (custom.vjp) differentiates through its own half-typed body
    return touches_half(op)


def widened_rule_inputs(builder: Builder, op: Op, g: Any) -> tuple[WidenedOp, Any]:
    """The stand-in op and the cotangent(s) a rule runs on in float32 (casts the graph's DCE drops where unread)."""
    operands = [_to_f32(builder, v) for v in op.operands]
    results = [_to_f32(builder, v) for v in op.results]
    widened_g = tuple(_to_f32(builder, c) for c in g) if isinstance(g, tuple) else _to_f32(builder, g)
    return WidenedOp(op, operands, results), widened_g


def rounded(builder: Builder, cotangent: Value, operand: Value) -> Value:
    """A float32 cotangent rounded to its half operand's dtype (unchanged for any other operand)."""
    if operand.type.dtype.is_half and cotangent.type.dtype is not operand.type.dtype:
        return builder.cast(cotangent, dtype=operand.type.dtype)
    return cotangent


def summed_in_float32(builder: Builder, cotangent: Value, target: TensorType,
                      unbroadcast: Callable[[Builder, Value, TensorType], Value]) -> Value:
    """``cotangent`` (in its operand's dtype) summed over the axes its operand was broadcast along, as PyTorch's
    ``sum_to_size`` sums a half gradient: in float32, rounded once (a sum in half would round at every addition)."""
    if cotangent.type.shape == target.shape or not cotangent.type.dtype.is_half:
        return unbroadcast(builder, cotangent, target.with_dtype(cotangent.type.dtype))
    summed = unbroadcast(builder, builder.cast(cotangent, dtype=DType.f32), target.with_dtype(DType.f32))
    return builder.cast(summed, dtype=cotangent.type.dtype)


def _to_f32(builder: Builder, value: Value | None) -> Value | None:
    if value is None or not value.type.dtype.is_half:
        return value
    return builder.cast(value, dtype=DType.f32)
