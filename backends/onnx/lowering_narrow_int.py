"""uint8, int8 and int16 on ONNX: the ops onnxruntime's CPU provider has no kernel for at those widths compute in int32.

ONNX's ``MatMul`` and ``Pow`` are not defined on 8- and 16-bit integers (onnxruntime refuses the model: "Type
'tensor(uint8)' of input parameter (a) of operator (MatMul) ... is invalid") and onnxruntime has no such ``Trilu``
kernel, nor ``ReduceSum``/``ReduceProd`` at any of those widths or ``ReduceMax``/``ReduceMin`` at int16, while its Add,
Mul, comparisons and moves take them. Each listed op's emitter is wrapped: Cast
the integer operands to int32, the op, Cast the results back. The narrowing Cast keeps the low bits, so the result is PyTorch's wrap-around one
(``uint8 200 * 2 = 144``): arithmetic modulo 2^32 agrees with arithmetic modulo 2^8 or 2^16.

```python
kiln.compile(lambda a: a @ a.t(), backend="onnxruntime")(kiln.ones(2, 3, dtype=kiln.uint8))   # MatMul in int32
```
"""

from __future__ import annotations

from typing import Any

from kiln.backends.onnx.lowering import ONNX
from kiln.compiler.ir.core import Op
from kiln.compiler.ir.types import DType

NARROW_INTEGERS = frozenset({DType.u8, DType.i8, DType.i16})
"""The integer dtypes narrower than 32 bits."""
NO_NARROW_INT_KERNEL = ("tensor.matmul", "tensor.pow", "tensor.tril", "tensor.triu", "tensor.reduce_sum",
                        "tensor.reduce_prod", "tensor.reduce_max", "tensor.reduce_min")
"""The ops whose ONNX node has no uint8/int8/int16 type constraint (``ReduceSum``/``ReduceProd`` take none of them,
``ReduceMax``/``ReduceMin`` no int16: SAM's ``calculate_stability_score`` sums masks with ``dtype=torch.int16``)."""


def touches_narrow_int(op: Op) -> bool:
    """Whether an operand or a result of ``op`` is a narrow integer."""
    values = [*op.operands, *op.results]
    return any(value.type.dtype in NARROW_INTEGERS for value in values)


def widened_to_int32(inner: Any) -> Any:
    """``inner``, an emitter, run on int32 Casts of the narrow integer operands; its results Cast back."""
    def emit(ctx: Any, op: Op, inputs: list[str]) -> list[str]:
        if not touches_narrow_int(op):
            return inner(ctx, op, inputs)
        int32 = ctx.onnx_dtype(DType.i32)
        widened = [ctx.node("Cast", [name], to=int32) if value.type.dtype in NARROW_INTEGERS else name
                   for name, value in zip(inputs, op.operands)]
        outputs = inner(ctx, op, widened)
        return [ctx.node("Cast", [name], to=ctx.onnx_dtype(value.type.dtype)) if value.type.dtype in NARROW_INTEGERS else name
                for name, value in zip(outputs, op.results)]

    return emit


for _name in NO_NARROW_INT_KERNEL:
    ONNX.register(_name)(widened_to_int32(ONNX.get(_name)))

__all__ = ["NARROW_INTEGERS", "NO_NARROW_INT_KERNEL", "touches_narrow_int", "widened_to_int32"]
