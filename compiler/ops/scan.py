"""Scans: ``tensor.cumsum``, the inclusive running sum along one axis.

```
%y = "tensor.cumsum"(%x) {axis = 1, reverse = false} : (tensor<Nx4xf32>) -> tensor<Nx4xf32>
```

``y[..., i, ...] = x[..., 0, ...] + ... + x[..., i, ...]`` along ``axis``;
with ``reverse`` the sum runs from the end: ``x[..., i, ...] + ... + x[..., n-1, ...]``.
The result has the operand's type, so any dim may be symbolic, the scanned one too.
Its VJP is the cumsum of the cotangent the other way.
"""

from __future__ import annotations

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType, normalize_axis
from kiln.compiler.ops.registry import register_op


@register_op("tensor.cumsum", axis=-1, reverse=False)
def cumsum_shape(x: TensorType, *, axis: int, reverse: bool) -> TensorType:
    """Same type as ``x`` (numeric, rank >= 1); ``axis`` counts from the end when negative."""
    if x.rank == 0 or x.dtype is DType.bool:
        raise ShapeError(f"tensor.cumsum needs a numeric operand of rank >= 1, got {x}")
    normalize_axis(axis, x.rank)
    return x
