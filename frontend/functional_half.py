"""Half-precision inputs of composite functions: compute in float32 and round the result once, as PyTorch's CPU kernels.

A function kiln builds from several ops (``rms_norm``, linear interpolation, adaptive average pooling) would round
to float16/bfloat16 after each of them, where PyTorch's kernel for the same function computes in its "opmath" type,
float32, and rounds once. ``in_opmath`` runs such a function on float32 copies of its half tensors and casts the
result back, so the rounding matches (the ``widen-half`` pass does the same for each single op):

```python
def rms_norm(input, normalized_shape, weight=None, eps=None):
    return in_opmath(lambda x, w: ..., input, weight)    # f16 in, f16 out; float32 inside
```

A float32 or float64 operand beside a half one promotes the whole computation to it, as PyTorch's type promotion
(``addcmul(float32, half, half)`` multiplies the halves in float32). A constant the function derives from the dtype
(an ``eps``) should come from ``opmath_dtype(input.dtype)``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from kiln.compiler.ir.types import DType
from kiln.frontend.autocast import region_enabled


def opmath_dtype(dtype: DType) -> DType:
    """The dtype a function computes in: float32 for float16/bfloat16, the dtype itself otherwise."""
    return DType.f32 if dtype.is_half else dtype


def in_opmath(function: Callable[..., Any], *operands: Any) -> Any:
    """``function(*operands)`` computed as one PyTorch kernel computes: every float tensor operand cast to the opmath
    type of their promoted dtype (float32 for float16/bfloat16, for a mix of the two and for float32; float64 if any
    is float64), the result (or each result of a tuple) rounded once back to the promoted dtype. Without half
    operands, ``function(*operands)`` unchanged."""
    floats = {t.dtype for t in operands if _is_float_tensor(t)}
    if not any(dtype.is_half for dtype in floats):
        return function(*operands)
    promoted = next(iter(floats)) if len(floats) == 1 else DType.f64 if DType.f64 in floats else DType.f32
    computed = opmath_dtype(promoted)
    result = function(*[t.to(computed) if _is_float_tensor(t) and t.dtype is not computed else t for t in operands])
    if isinstance(result, tuple):
        return tuple(_rounded(r, promoted) for r in result)
    return _rounded(result, promoted)


def bias_added_in_opmath(function: Callable[..., Any], input: Any, weight: Any, bias: Any) -> Any:
    """``function(input, weight, bias)``, a product plus its bias, rounded once in a CPU autocast region, as torch's
    addmm and convolution kernels add the bias in float32 before rounding; elsewhere each op rounds (a half model's
    product stays a half GEMM on CuPy, its bias a second kernel)."""
    if region_enabled("cpu"):
        return in_opmath(function, input, weight, bias)
    return function(input, weight, bias)


def mixed_norm(function: Callable[..., Any], input: Any, *parameters: Any) -> Any:
    """A normalization of a half ``input`` with float32 parameters (weight, bias, running statistics), as PyTorch's
    mixed-type CPU kernels compute it: in float32, the result rounded once to the input's dtype (parameters and
    running statistics stay float32). This is what an autocast region makes of ``LayerNorm(Linear(x))``. Any
    other mix of dtypes: ``function(input, *parameters)`` unchanged."""
    if not (_is_float_tensor(input) and input.dtype.is_half):
        return function(input, *parameters)
    floats = [p for p in parameters if _is_float_tensor(p)]
    if not floats or not all(p.dtype is DType.f32 for p in floats):
        return function(input, *parameters)
    return _rounded(function(input.to(DType.f32), *parameters), input.dtype)


def computes_in_opmath(method: Callable[..., Any]) -> Callable[..., Any]:
    """A Tensor method built from many ops (a special function's series) that computes a half ``self`` in float32 and
    rounds the result once, as PyTorch's kernel does; other dtypes run ``method`` unchanged."""

    @functools.wraps(method)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        return in_opmath(lambda x: method(x, *args, **kwargs), self)

    return wrapped


def _is_float_tensor(value: Any) -> bool:
    """A kiln tensor (its dtype a ``DType``: this file is imported by Tensor's own bases) of a float dtype."""
    dtype = getattr(value, "dtype", None)
    return isinstance(dtype, DType) and dtype.is_float


def _rounded(result: Any, dtype: DType) -> Any:
    return result.to(dtype) if _is_float_tensor(result) and result.dtype is not dtype else result


__all__ = ["computes_in_opmath", "in_opmath", "mixed_norm", "opmath_dtype"]
