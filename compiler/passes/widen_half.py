"""widen-half: compute float16/bfloat16 ops in float32, rounding each result back to its half dtype.

NumPy has no half-precision BLAS (its float16 matmul is a scalar loop) and ONNX Runtime's CPU kernels mostly take
float32, so these backends keep half tensors in 16 bits (parameters, activations, optimizer state) and compute each
op in float32, as PyTorch's CPU kernels do internally (its "opmath" type). The result is rounded back once per op,
so an op's value is PyTorch's to within that rounding:

```
%y = "tensor.matmul"(%a, %b) : (tensor<8x4xf16>, tensor<4x2xf16>) -> tensor<8x2xf16>
->
%a32 = "tensor.cast"(%a) {dtype = f32} ...
%b32 = "tensor.cast"(%b) {dtype = f32} ...
%y32 = "tensor.matmul"(%a32, %b32) : ... -> tensor<8x2xf32>
%y = "tensor.cast"(%y32) {dtype = f16} ...
```

Ops that only move or select elements are exact in any precision and stay half. An optimizer update of half tensors
is first written out as PyTorch's op sequence (its decomposition), whose ops are then widened one by one. An op with a nested graph (a fused
group, a custom VJP) stays as it is: its body is typed in the half dtype. A cast of a cast (``f16 -> f32 -> f16``)
is never folded: that would drop the rounding this pass exists to keep.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import DType
from kiln.compiler.passes.decompose import decompose_where
from kiln.compiler.passes.manager import Pass, register_pass
from kiln.compiler.passes.rewrite import replace_uses

EXACT_IN_HALF = frozenset({
    "tensor.cast", "tensor.constant", "tensor.reshape", "tensor.transpose", "tensor.broadcast_to", "tensor.expand_dims",
    "tensor.squeeze", "tensor.slice", "tensor.concat", "tensor.take", "tensor.where", "tensor.stop_gradient",
    "tensor.tril", "tensor.triu", "tensor.pad", "comm.send", "comm.recv", "comm.broadcast", "comm.replicate",
})
"""Ops that move, select or copy elements: their half results are exact without widening."""


@register_pass
@dataclass(frozen=True)
class WidenHalf(Pass):
    name = "widen-half"

    def run(self, graph: Graph) -> bool:
        expanded = decompose_where(graph, is_half_update)
        targets = [op for op in graph.ops if needs_widening(op)]
        widened: dict[Value, Value] = {}
        for op in targets:
            widen(graph, op, widened)
        return expanded or bool(targets)


def is_half_update(op: Op) -> bool:
    """An optimizer update (``optim.*``) of half tensors: written out first as the ops PyTorch runs, each rounding to
    half (its decomposition, ``compiler/ops/optim.py``), then widened op by op; widened whole, it would round only what
    it writes (and its float64 hyper-parameters no longer fit a float32 parameter)."""
    return op.name.startswith("optim.") and bool(op.operands) and op.operands[0].type.dtype.is_half


def needs_widening(op: Op) -> bool:
    """Whether ``op`` computes on a half operand or into a half result (and can be rebuilt in float32)."""
    if op.name in EXACT_IN_HALF or any(isinstance(value, Graph) for value in op.attrs.values()):
        return False
    return touches_half(op) or _half_attr(op) is not None


def touches_half(op: Op) -> bool:
    """Whether ``op`` reads or makes a float16/bfloat16 value."""
    return any(v.type.dtype.is_half for v in [*op.operands, *op.results])


def widen(graph: Graph, op: Op, widened: dict[Value, Value]) -> None:
    """Replace ``op`` by its float32 twin between casts (see the module docstring). ``widened`` holds the float32
    cast of each half value already made, so a value read by many ops (a weight) is cast once."""
    build = Builder(graph, insert_before=op, location=op.location, region=op.region)
    operands = [_widened(build, v, widened) if v.type.dtype.is_half else v for v in op.operands]
    attrs = dict(op.attrs)
    if _half_attr(op) is not None:
        attrs["dtype"] = DType.f32
    twin = build.create(op.name, operands, attrs)
    for old, new in zip(op.results, twin.results):
        rounded = build.cast(new, dtype=old.type.dtype) if new.type.dtype is not old.type.dtype else new
        rounded.name_hint = old.name_hint
        replace_uses(graph, old, rounded)
    graph.erase(op)


def _widened(build: Builder, value: Value, widened: dict[Value, Value]) -> Value:
    if value not in widened:
        widened[value] = build.cast(value, dtype=DType.f32)
    return widened[value]


def _half_attr(op: Op) -> DType | None:
    dtype = op.attrs.get("dtype")
    return dtype if isinstance(dtype, DType) and dtype.is_half else None

