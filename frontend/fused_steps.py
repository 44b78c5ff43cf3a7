"""``origin + step * count`` rounded once (a fused multiply-add), for one scalar ``step`` and whole arrays of integer
``count`` and ``origin``: ``torch.linspace``'s values (frontend/linspace_values.py) at NumPy speed.

``fused_multiply_add`` (frontend/fused_multiply_add.py) takes three arbitrary arrays and pays ~40 array passes per
value. Here a scalar step and small integer counts let most of the work go:

- float32: ``count * step`` is exact in float64 (24 + 29 bits), so ``origin + count * step`` is one float64 rounding,
  then one float32 rounding. The two roundings differ from one only where the float64 sum lands exactly on a float32
  midpoint without being exact: those few values are rounded to odd (Boldo and Melquiond) before the cast.
- float64: Dekker's exact product needs no split of ``count`` (its own high part below 2^26) and splits ``step``
  once, in Python. ``high + low + product_low`` is then ``origin + count * step`` exactly (Knuth's TwoSum for ``high +
  low``), and ``high + (low + product_low)`` rounds it once except where ``low + product_low`` rounds to a power of
  two (the only floats that can be half an ulp of ``high``): those few are rounded to odd instead, exactly.
"""

from __future__ import annotations

import numpy as np

from kiln.frontend.fused_multiply_add import SPLITTERS, _rounded_to_odd_sum, split

FLOAT64_FRACTION = (1 << 52) - 1
"""The fraction bits of a float64: zero for a power of two."""
FLOAT32_MIDPOINT_BITS = (1 << 29) - 1, 1 << 28
"""A float64 holds 29 more fraction bits than a float32: a float32 midpoint has exactly the top one of them set."""
COUNT_LIMIT = {"d": 2 ** 26, "f": 2 ** 29}
"""Counts below this need no split (float64) or multiply ``step`` exactly in float64 (float32)."""
BLOCK = 8192
"""Values per block: a float64 block is 64 KiB, a dozen of them fit a core's L2 cache."""


def fused_steps(origins: np.ndarray, step: float, counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``origins + step * counts`` elementwise, each rounded once to ``dtype`` (float64 or float32); ``counts`` holds
    integers below ``COUNT_LIMIT[dtype.char]`` in magnitude (as float64, the sign of a zero kept), ``origins`` (float64)
    and ``step`` values of ``dtype``, both 1-D; finite values away from overflow and underflow. Computed a block at a
    time so the dozen temporaries stay in cache."""
    single = np.dtype(dtype).char == "f"
    fused = _fused_steps_float32 if single else _fused_steps_float64
    result = np.empty(counts.shape, np.float32 if single else np.float64)
    for begin in range(0, counts.size, BLOCK):
        block = slice(begin, begin + BLOCK)
        fused(origins[block], float(step), counts[block], result[block])
    return result


def _fused_steps_float32(origins: np.ndarray, step: float, counts: np.ndarray, out: np.ndarray) -> None:
    """One float64 rounding of the exact sum, rounded to odd where the float32 cast would round a second time."""
    product = counts * step  # exact: a float32 step times a count below 2^29
    total = origins + product
    low_bits, midpoint = FLOAT32_MIDPOINT_BITS
    on_midpoint = np.flatnonzero((total.view(np.int64) & low_bits) == midpoint)
    if on_midpoint.size:
        total[on_midpoint] = _rounded_to_odd_sum(origins[on_midpoint], product[on_midpoint])
    out[...] = total


def _fused_steps_float64(origins: np.ndarray, step: float, counts: np.ndarray, out: np.ndarray) -> None:
    """Dekker's product with ``count`` unsplit, TwoSum with ``origin``, round to odd only where it can matter."""
    product = counts * step
    step_high, step_low = split(step, SPLITTERS["float64"])
    if step_low == 0.0:  # step has at most 26 bits: every product is exact, one rounding already
        np.add(origins, product, out=out)
        return
    product_low = counts * step_high
    product_low -= product
    product_low += counts * step_low
    high = origins + product
    low = _two_sum_low(origins, product, high)
    low_sum = low + product_low
    np.add(high, low_sum, out=out)
    _round_ties_once(out, high, low, product_low, low_sum)


def _two_sum_low(a: np.ndarray, b: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Knuth's TwoSum's error: ``high + low == a + b`` exactly for ``high = a + b`` rounded."""
    b_virtual = high - a
    return (a - (high - b_virtual)) + (b - b_virtual)


def _round_ties_once(fused: np.ndarray, high: np.ndarray, low: np.ndarray, product_low: np.ndarray,
                     low_sum: np.ndarray) -> None:
    """Where ``low_sum`` (``low + product_low`` rounded) is a power of two it may be a tie of ``high``: there the sum
    is rounded to odd instead, which makes ``high + it`` the one rounding. Elsewhere no midpoint of ``high``'s
    neighbours lies between the exact sum and its rounding (a midpoint's offset from ``high`` is itself a float), so
    rounding to nearest twice is already rounding once. Where ``low_sum`` is zero (no fraction bits either) the sum is
    ``high`` exactly, with the sign of zero IEEE gives ``origin + product``."""
    candidates = np.flatnonzero((low_sum.view(np.int64) & FLOAT64_FRACTION) == 0)
    if candidates.size:
        odd = high[candidates] + _rounded_to_odd_sum(low[candidates], product_low[candidates])
        fused[candidates] = np.where(low_sum[candidates] == 0.0, high[candidates], odd)
