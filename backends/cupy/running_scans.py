"""``running`` for the CuPy table: the NumPy scan kernels (``backends/numpy/lowering_scan.py``) accumulate with a
ufunc's ``accumulate``, which CuPy has only for sums and products; on the device a running ``maximum``, ``minimum`` or
``logaddexp`` is a log-depth (Hillis-Steele) scan instead: ``ceil(log2 n)`` whole-array steps, step ``k`` combining
every element with the running value ``2**k`` places before it, each step one elementwise kernel.

```python
table = cupy_table()   # lowering_scan's ``running`` is replaced by log_depth_running(cupy)
```
"""

from __future__ import annotations

from typing import Any, Callable


def log_depth_running(cupy: Any) -> Callable[..., Any]:
    """``running(ufunc, x, axis, reverse)`` on the device (the re-bound kernels pass CuPy's ufuncs)."""

    def running(ufunc: Any, x: Any, axis: int, reverse: bool = False) -> Any:
        total = cupy.flip(x, axis).copy() if reverse else x.copy()
        step, size, axis = 1, x.shape[axis], axis % x.ndim
        while step < size:
            later, earlier = _along(axis, slice(step, None)), _along(axis, slice(None, size - step))
            total[later] = ufunc(total[earlier], total[later])  # the right side is a new array: no overlap
            step *= 2
        return cupy.flip(total, axis) if reverse else total

    return running


def _along(axis: int, part: slice) -> tuple[slice, ...]:
    return (slice(None),) * axis + (part,)
