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

``fused_steps`` (frontend/fused_steps.py) rounds each value once, as the contracted C++ does, vectorised over the
whole array.
"""

from __future__ import annotations

import numpy as np

from kiln.frontend.fused_multiply_add import fused_multiply_add
from kiln.frontend.fused_steps import COUNT_LIMIT, fused_steps


def torch_linspace(start: float, end: float, steps: int, dtype: np.dtype) -> np.ndarray:
    """``steps`` values from ``start`` to ``end`` in ``dtype``, bit for bit as ``torch.linspace`` on the CPU."""
    dtype = np.dtype(dtype)
    compute = dtype if dtype.char in "fd" else np.dtype(np.float64)  # integers (as torch's), halves: float64 then cast
    if steps <= 1:
        return _cast_like_torch(np.array([start] * steps, compute), dtype)
    if dtype.kind in "iu":  # torch converts the bounds to the integer type first (truncating)
        start, end = int(start), int(end)
    first, last = compute.type(start), compute.type(end)
    step = compute.type((last - first) / compute.type(steps - 1))
    origins, counts = _origins_and_counts(first, last, steps)
    if steps // 2 < COUNT_LIMIT[compute.char]:
        return _cast_like_torch(fused_steps(origins, step, counts, compute), dtype)
    multiplied = fused_multiply_add(np.full(steps, step), counts.astype(compute), origins.astype(compute))
    return _cast_like_torch(multiplied, dtype)


def _origins_and_counts(first: float, last: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``first`` counted up by ``i`` below ``steps // 2``, ``last`` counted down by ``steps - 1 - i`` from there on: the
    counts of the upper half negative, the last one ``-0.0`` (``step * -0.0`` has the zero's sign of ``-step * 0``)."""
    halfway = steps // 2
    counts = np.arange(steps, dtype=np.float64)
    counts[halfway:] -= steps - 1
    counts[-1] = -0.0
    origins = np.empty(steps)
    origins[:halfway], origins[halfway:] = first, last
    return origins, counts


def _cast_like_torch(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integers truncate toward zero (C++'s conversion); floats round to nearest."""
    if dtype.kind not in "iub":
        return values.astype(dtype, copy=False)
    with np.errstate(invalid="ignore"):
        return np.trunc(values).astype(dtype)

