"""``kiln.linspace`` gives torch 2.13's CPU values bit for bit (one fused multiply-add per value, the upper half counted
back from ``end``): NumPy's ``linspace`` differed from torch's in the last bit of about a third of the values (float64),
and kiln computed float32 ones in float64 then rounded (differing more). The emulated fused multiply-add is exact
against rational arithmetic."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import kiln
from kiln.frontend.fused_multiply_add import SPLITTERS, fused_multiply_add, nearly_fused_multiply_add
from oracles import require_torch

BOUNDS = [(-1, 1), (0, 1), (-3.5, 2.25), (1e-3, 7.0), (5, -2), (0, 10), (-7, 2)]


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int32"])
def test_linspace_matches_torch_bit_for_bit(dtype):
    torch = require_torch()
    for steps in list(range(0, 70)) + [255, 1000, 4097]:
        for start, end in BOUNDS:
            expected = torch.linspace(start, end, steps, dtype=getattr(torch, dtype)).numpy()
            ours = np.asarray(kiln.linspace(start, end, steps, dtype=getattr(kiln, dtype)))
            assert ours.dtype == expected.dtype
            np.testing.assert_array_equal(ours, expected, err_msg=f"linspace({start}, {end}, {steps})")


def test_linspace_follows_the_default_dtype_as_torch(float64_default):
    torch = float64_default
    np.testing.assert_array_equal(np.asarray(kiln.linspace(-1, 1, 28)), torch.linspace(-1, 1, 28).numpy())


def _exact(a, b, c, dtype):
    """``a * b + c`` in rationals, rounded once to ``dtype`` (to nearest, ties to even)."""
    value = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    nearest = dtype.type(float(value))  # float64: correctly rounded; float32: checked against its neighbours
    neighbours = [np.nextafter(nearest, dtype.type(-np.inf)), nearest, np.nextafter(nearest, dtype.type(np.inf))]
    even = lambda x: int(np.array(x).view(np.int64 if dtype == np.float64 else np.int32)) & 1  # noqa: E731
    return min(neighbours, key=lambda x: (abs(Fraction(float(x)) - value), even(x)))


@pytest.mark.parametrize("dtype", [np.dtype(np.float64), np.dtype(np.float32)])
def test_fused_multiply_add_rounds_once(dtype):
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(1500) * 10.0 ** rng.integers(-3, 4, 1500) for _ in range(3))
    a, b, c = a.astype(dtype), b.astype(dtype), c.astype(dtype)
    expected = np.array([_exact(x, y, z, dtype) for x, y, z in zip(a, b, c)], dtype)
    np.testing.assert_array_equal(fused_multiply_add(a, b, c), expected)
    np.testing.assert_array_equal(nearly_fused_multiply_add(a, b, c, SPLITTERS[dtype.name]), expected)
    assert (a * b + c != expected).any()  # two roundings differ somewhere: the test can tell
