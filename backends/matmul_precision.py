"""``kiln.set_float32_matmul_precision`` / ``kiln.get_float32_matmul_precision``: PyTorch's float32 matmul setting.

``"highest"`` (the default) computes float32 matmuls in full float32; ``"high"`` and ``"medium"`` allow a faster,
less precise internal format. Only the CuPy backend has one: a ``CupyBackend`` made after ``"high"`` or
``"medium"`` compiles with TF32 on (cuBLAS on tensor cores, ~10 mantissa bits), after ``"highest"`` with it off;
``CupyBackend(tf32=...)`` and ``KILN_CUPY_TF32`` still decide where given. The NumPy and ONNX Runtime backends
always compute float32 matmuls in float32: there the setting changes nothing (as on PyTorch's CPU).

```python
kiln.set_float32_matmul_precision("high")   # later compiles for backend="cupy" use TF32
```
"""

from __future__ import annotations

PRECISIONS = ("highest", "high", "medium")
"""PyTorch's names, from the most precise: full float32, then TF32 (PyTorch's "high" may also use bfloat16x3;
kiln's CuPy backend uses TF32 for both "high" and "medium")."""

_precision = "highest"


def set_float32_matmul_precision(precision: str) -> None:
    """Set the float32 matmul precision for compiles after the call: ``"highest"``, ``"high"`` or ``"medium"``."""
    global _precision
    if not isinstance(precision, str):
        raise TypeError(f"set_float32_matmul_precision expects a str ({', '.join(map(repr, PRECISIONS))}), got {type(precision).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"set_float32_matmul_precision: {precision!r} is not one of {', '.join(map(repr, PRECISIONS))}; "
                         "'highest' keeps full float32, 'high' or 'medium' allow TF32 on the CuPy backend")
    _precision = precision


def get_float32_matmul_precision() -> str:
    """The current float32 matmul precision: ``"highest"`` unless ``set_float32_matmul_precision`` changed it."""
    return _precision


def allows_tf32() -> bool:
    """Whether the setting lets float32 matmuls use TF32 (``"high"`` or ``"medium"``)."""
    return _precision != "highest"


__all__ = ["PRECISIONS", "allows_tf32", "get_float32_matmul_precision", "set_float32_matmul_precision"]
