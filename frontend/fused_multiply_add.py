"""``a * b + c`` rounded once (a fused multiply-add), from ordinary float operations, as PyTorch's CPU kernels compute
it where the compiler contracts ``x * y + z`` (``torch.linspace``, ``grid_sample``'s unnormalization): NumPy and
kiln's IR have no fma, and two roundings put a value within an ulp of an integer on the other side of it.

The error-free transforms (Dekker's exact product by Veltkamp's split, Knuth's TwoSum) use only ``+ - *``, so they
run on NumPy arrays and on kiln tensors alike. ``fused_multiply_add`` adds the low parts with rounding to odd
(Boldo and Melquiond, "Emulation of a FMA and correctly rounded sums: proved algorithms using rounding to odd", IEEE
Trans. Computers 57(4), 2008), which makes it exact; it needs the bits, so it takes NumPy arrays.
``nearly_fused_multiply_add`` rounds the low parts to nearest instead (any array or tensor): exact but in the
double-rounding ties, where the low parts' sum lands on half an ulp of the high part.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Veltkamp's splitting constant 2^ceil(p / 2) + 1 for a float of p significand bits.
SPLITTERS = {"float64": 2.0 ** 27 + 1.0, "float32": 2.0 ** 12 + 1.0, "float16": 2.0 ** 6 + 1.0, "bfloat16": 2.0 ** 4 + 1.0}


def fused_multiply_add(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` rounded once, elementwise, in the arrays' float dtype (finite values away from overflow and
    underflow)."""
    high, low, product_low = _exact_parts(a, b, c, SPLITTERS[a.dtype.name])
    fused = high + _rounded_to_odd_sum(low, product_low)
    np.copyto(fused, high, where=fused == 0)  # an exact zero: the sign IEEE gives c + a * b (the product is exact)
    return fused


def nearly_fused_multiply_add(a: Any, b: Any, c: Any, splitter: float) -> Any:
    """``a * b + c`` rounded once but in double-rounding ties; arrays or tensors, ``splitter`` from ``SPLITTERS``."""
    high, low, product_low = _exact_parts(a, b, c, splitter)
    return high + (low + product_low)


def _exact_parts(a: Any, b: Any, c: Any, splitter: float) -> tuple[Any, Any, Any]:
    """``high + low + product_low == a * b + c`` exactly, ``high`` the sum of ``c`` and the rounded product."""
    product_high, product_low = exact_product(a, b, splitter)
    high, low = exact_sum(c, product_high)
    return high, low, product_low


def exact_product(a: Any, b: Any, splitter: float) -> tuple[Any, Any]:
    """Dekker's TwoProduct: ``high + low == a * b`` exactly, ``high`` the rounded product."""
    high = a * b
    a_high, a_low = split(a, splitter)
    b_high, b_low = split(b, splitter)
    low = ((a_high * b_high - high) + a_high * b_low + a_low * b_high) + a_low * b_low
    return high, low


def split(x: Any, splitter: float) -> tuple[Any, Any]:
    """Veltkamp's split: ``high + low == x``, each with at most half the significand's bits."""
    scaled = x * splitter
    high = scaled - (scaled - x)
    return high, x - high


def exact_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """Knuth's TwoSum: ``high + low == a + b`` exactly, ``high`` the rounded sum."""
    high = a + b
    b_virtual = high - a
    low = (a - (high - b_virtual)) + (b - b_virtual)
    return high, low


def _rounded_to_odd_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b`` rounded to odd: exact sums as they are, inexact ones to the neighbour whose last bit is 1."""
    nearest, error = exact_sum(a, b)
    bits = nearest.view(np.int64 if nearest.dtype == np.float64 else np.int32)
    even = (bits & 1) == 0
    toward = np.nextafter(nearest, np.where(error > 0, np.inf, -np.inf).astype(nearest.dtype))
    return np.where((error != 0) & even, toward, nearest)
