"""``fused_steps`` (frontend/fused_steps.py, kiln.linspace's values) rounds ``origin + step * count`` once, against
rational arithmetic: on random values (where rounding the product first differs in about one value in eight) and on
constructed double-rounding ties, where ``origin + step * count`` lies just off a midpoint of ``origin``'s neighbours
and the rounded parts land on it (the cases its round-to-odd corrections exist for)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from kiln.frontend.fused_steps import fused_steps

FRACTION_BITS = {np.dtype(np.float64): 52, np.dtype(np.float32): 23}
INTEGER_VIEW = {np.dtype(np.float64): np.int64, np.dtype(np.float32): np.int32}


def _rounded_once(value: Fraction, dtype: np.dtype):
    """``value`` rounded to nearest, ties to even, in ``dtype``."""
    guess = dtype.type(float(value))
    neighbours = [np.nextafter(guess, dtype.type(-np.inf)), guess, np.nextafter(guess, dtype.type(np.inf))]
    even = lambda x: int(np.array(x).view(INTEGER_VIEW[dtype])) & 1  # noqa: E731
    return min(neighbours, key=lambda x: (abs(Fraction(float(x)) - value), even(x)))


def _check_against_rationals(origins, step, counts, dtype):
    ours = fused_steps(origins, step, counts, dtype)
    exact = [_rounded_once(Fraction(float(o)) + Fraction(float(step)) * int(c), dtype) for o, c in zip(origins, counts)]
    np.testing.assert_array_equal(ours, np.array(exact, dtype))
    return np.array(exact, dtype)


@pytest.mark.parametrize("dtype", [np.dtype(np.float64), np.dtype(np.float32)])
def test_random_values_round_once(dtype):
    rng = np.random.default_rng(0)
    for exponent in range(-3, 4):
        step = dtype.type(rng.standard_normal() * 10.0 ** exponent)
        origins = (rng.standard_normal(400) * 10.0 ** rng.integers(-3, 4, 400)).astype(dtype).astype(np.float64)
        counts = rng.integers(-5000, 5000, 400).astype(np.float64)
        exact = _check_against_rationals(origins, step, counts, dtype)
        product = (counts * np.float64(step)).astype(dtype) if dtype == np.float32 else counts * step
        assert (origins.astype(dtype) + product != exact).any()  # two roundings differ somewhere: the test can tell


@pytest.mark.parametrize("dtype", [np.dtype(np.float64), np.dtype(np.float32)])
def test_double_rounding_ties_round_once(dtype):
    """``origin = 2^e`` far above ``step * count``, which lies within a rounding of ``origin``'s half ulp: its
    rounded pieces sum to that midpoint exactly, and ties-to-even would round the wrong way."""
    half_ulp_exponent = 30
    origin = 2.0 ** (half_ulp_exponent + FRACTION_BITS[dtype] + 1)
    counts = np.arange(2 ** 20 - 300, 2 ** 20 + 300, dtype=np.float64)
    for sign in (1.0, -1.0):
        for count in counts:
            step = dtype.type(sign * 2.0 ** half_ulp_exponent / count)
            _check_against_rationals(np.array([sign * origin]), step, np.array([count]), dtype)
