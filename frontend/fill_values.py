"""A Python number written into a tensor (``masked_fill``, and through it ``fill_``, ``masked_fill_``, ``index_fill``)
converted to the tensor's dtype as PyTorch converts it: the result keeps the tensor's dtype, a float is truncated
toward zero into an integer tensor (``long.fill_(2.7)`` is 2) and is ``bool(value)`` in a bool one, and a float the
dtype cannot hold (inf or NaN into an integer, ``1e300`` into float32) is PyTorch's RuntimeError. kiln promoted
``long.masked_fill(mask, 2.7)`` to float32 and refused ``long.fill_(2.7)``."""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from kiln.compiler.ir.types import DType


def fill_value(value: Any, dtype: DType, call: str) -> Any:
    """``value`` as ``dtype`` holds it when it is a Python (or NumPy) float; anything else unchanged."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, float) or dtype.is_complex:
        return value
    if dtype is DType.bool:
        return bool(value)
    if dtype.is_float:
        if math.isfinite(value) and abs(value) > float(ml_dtypes.finfo(dtype.numpy).max):
            raise _overflow(value, dtype, call)
        return value
    limits = np.iinfo(dtype.numpy)
    if not math.isfinite(value) or not int(limits.min) <= value <= int(limits.max):  # exact: Python compares int and float exactly
        raise _overflow(value, dtype, call)
    return int(value)  # toward zero, as C's conversion


def _overflow(value: float, dtype: DType, call: str) -> RuntimeError:
    return RuntimeError(f"{call}: value cannot be converted to type {dtype} without overflow (PyTorch's error): "
                        f"{value!r} is outside what {dtype} holds; fill with a value in its range or convert the tensor")
