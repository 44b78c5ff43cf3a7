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

import functools
from typing import Any, Callable

from kiln.compiler.ir.types import DType


def opmath_dtype(dtype: DType) -> DType:
    """The dtype a function computes in: float32 for float16/bfloat16, the dtype itself otherwise."""
    return DType.f32 if dtype.is_half else dtype


def in_opmath(function: Callable[..., Any], *operands: Any) -> Any:
    """``function(*operands)`` with each half tensor widened to float32, the result (or each result of a tuple) rounded
    back to the first half operand's dtype; without half operands, ``function(*operands)`` unchanged."""
    half = next((t.dtype for t in operands if _is_half_tensor(t)), None)
    if half is None:
        return function(*operands)
    result = function(*[t.float() if _is_half_tensor(t) else t for t in operands])
    if isinstance(result, tuple):
        return tuple(_rounded(r, half) for r in result)
    return _rounded(result, half)


def computes_in_opmath(method: Callable[..., Any]) -> Callable[..., Any]:
    """A Tensor method built from many ops (a special function's series) that computes a half ``self`` in float32 and
    rounds the result once, as PyTorch's kernel does; other dtypes run ``method`` unchanged."""

    @functools.wraps(method)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        return in_opmath(lambda x: method(x, *args, **kwargs), self)

    return wrapped


def _is_half_tensor(value: Any) -> bool:
    """A kiln tensor (its dtype a ``DType``; this file is imported by Tensor's own bases) of float16 or bfloat16."""
    dtype = getattr(value, "dtype", None)
    return isinstance(dtype, DType) and dtype.is_half


def _rounded(result: Any, half: DType) -> Any:
    return result.to(half) if isinstance(getattr(result, "dtype", None), DType) and result.dtype is DType.f32 else result


__all__ = ["computes_in_opmath", "in_opmath", "opmath_dtype"]
