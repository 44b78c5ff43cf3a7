"""``torch.linspace``'s values to the last bit, as PyTorch's CPU kernel computes them (RangeFactoriesKernel.cpp):

```
step = (end - start) / (steps - 1)                       in the result's float dtype (float64 for integer results)
i <  steps / 2:  start + step * i                        one fused multiply-add (one rounding)
i >= steps / 2:  end - step * (steps - 1 - i)            from the far end, so the last value is ``end`` exactly
```

NumPy's ``linspace`` computes ``start + i * step`` with two roundings from the start only, so about a third of its
values differ from torch's in the last bit. That bit matters where a value is then floored or compared: the sample
points of ``F.affine_grid``'s identity grid land exactly on pixel centres, where ``grid_sample``'s bilinear gradient
with respect to the grid jumps (a spatial transformer starts there).

``fused_multiply_add`` (frontend/fused_multiply_add.py) rounds each value once, as the contracted C++ does.
"""

from __future__ import annotations

import numpy as np

from kiln.frontend.fused_multiply_add import fused_multiply_add


def torch_linspace(start: float, end: float, steps: int, dtype: np.dtype) -> np.ndarray:
    """``steps`` values from ``start`` to ``end`` in ``dtype``, bit for bit as ``torch.linspace`` on the CPU."""
    dtype = np.dtype(dtype)
    exact_float = dtype.name in ("float32", "float64")
    compute = dtype if exact_float else np.dtype(np.float64)  # integers (as torch's), halves: float64 then cast
    if steps <= 1:
        return _cast_like_torch(np.array([start] * steps, compute), dtype)
    if dtype.kind in "iu":  # torch converts the bounds to the integer type first (truncating)
        start, end = int(start), int(end)
    first, last = compute.type(start), compute.type(end)
    step = compute.type((last - first) / compute.type(steps - 1))
    index = np.arange(steps, dtype=compute)
    halfway = steps // 2
    low = fused_multiply_add(np.full(halfway, step), index[:halfway], np.full(halfway, first))
    high = fused_multiply_add(np.full(steps - halfway, -step), (steps - 1) - index[halfway:], np.full(steps - halfway, last))
    return _cast_like_torch(np.concatenate([low, high]), dtype)


def _cast_like_torch(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integers truncate toward zero (C++'s conversion); floats round to nearest."""
    with np.errstate(invalid="ignore"):
        return np.trunc(values).astype(dtype) if dtype.kind in "iub" else values.astype(dtype)

