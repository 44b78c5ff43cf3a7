"""Half-precision inputs of composite functions: compute in float32 and round the result once, as PyTorch's CPU kernels.

A function kiln builds from several ops (``rms_norm``, linear interpolation, adaptive average pooling) would round
to float16/bfloat16 after each of them, where PyTorch's kernel for the same function computes in its "opmath" type,
float32, and rounds once. ``in_opmath`` runs such a function on float32 copies of its half tensors and casts the
result back, so the rounding matches (the ``widen-half`` pass does the same for each single op):

```python
def rms_norm(input, normalized_shape, weight=None, eps=None):
    return in_opmath(lambda x, w: ..., input, weight)    # f16 in, f16 out; float32 inside
```

A constant the function derives from the dtype (an ``eps``) should come from ``opmath_dtype(input.dtype)``.
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.compiler.ir.types import DType
from kiln.frontend.tensor import Tensor


def opmath_dtype(dtype: DType) -> DType:
    """The dtype a function computes in: float32 for float16/bfloat16, the dtype itself otherwise."""
    return DType.f32 if dtype.is_half else dtype


def in_opmath(function: Callable[..., Any], *operands: Any) -> Any:
    """``function(*operands)`` with each half tensor widened to float32, the result (or each result of a tuple) rounded
    back to the first half operand's dtype; without half operands, ``function(*operands)`` unchanged."""
    half = next((t.dtype for t in operands if isinstance(t, Tensor) and t.dtype.is_half), None)
    if half is None:
        return function(*operands)
    result = function(*[t.float() if isinstance(t, Tensor) and t.dtype.is_half else t for t in operands])
    if isinstance(result, tuple):
        return tuple(_rounded(r, half) for r in result)
    return _rounded(result, half)


def _rounded(result: Any, half: DType) -> Any:
    return result.to(half) if isinstance(result, Tensor) and result.dtype is DType.f32 else result


__all__ = ["in_opmath", "opmath_dtype"]
