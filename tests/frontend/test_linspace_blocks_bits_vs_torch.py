"""``kiln.linspace``'s vectorised fused multiply-adds (frontend/fused_steps.py: a block at a time, the round-to-odd
correction only where a double rounding can differ) keep torch 2.13's CPU values to the bit, the sign of a zero
included: random bounds, lengths across block boundaries, steps with few bits (every product exact) and signed zero
bounds. The values are compared as integers, so ``-0.0 != 0.0`` here."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.frontend.fused_steps import BLOCK, COUNT_LIMIT
from oracles import require_torch

LENGTHS = [2, 3, 100, BLOCK - 1, BLOCK, 2 * BLOCK + 1, 3 * BLOCK + 7, 60001]
SIGNED_ZERO_BOUNDS = [(-0.0, 1.0), (1.0, -0.0), (-0.0, -0.0), (0.0, -0.0), (-0.0, -3.0), (-2.0, 0.0), (3.0, 3.0)]


def _bits(array):
    array = np.asarray(array)
    return array.view(np.int64 if array.dtype == np.float64 else np.int32)


def _assert_same_bits(torch, start, end, steps, dtype):
    expected = torch.linspace(start, end, steps, dtype=getattr(torch, dtype)).numpy()
    ours = np.asarray(kiln.linspace(start, end, steps, dtype=getattr(kiln, dtype)))
    mismatched = np.flatnonzero(_bits(ours) != _bits(expected))
    if mismatched.size:
        first = mismatched[0]
        raise AssertionError(f"linspace({start!r}, {end!r}, {steps}) {dtype}: {mismatched.size} values differ, first "
                             f"at {first}: {ours[first]!r} vs torch's {expected[first]!r}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_random_bounds_across_blocks_match_torch_bits(dtype):
    torch = require_torch()
    rng = np.random.default_rng(1)
    for steps in LENGTHS:
        for _ in range(6):
            start, end = rng.standard_normal(2) * 10.0 ** rng.integers(-4, 5, 2)
            _assert_same_bits(torch, float(start), float(end), steps, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("steps", [5, 17, 257, 4097, 2 * BLOCK + 1])
def test_steps_with_few_bits_match_torch_bits(dtype, steps):
    torch = require_torch()
    for start, end in [(-1.0, 1.0), (0.0, 1.0), (-0.75, 3.25), (1.0, 0.1)]:
        _assert_same_bits(torch, start, end, steps, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_signed_zero_bounds_match_torch_bits(dtype):
    torch = require_torch()
    for start, end in SIGNED_ZERO_BOUNDS:
        for steps in (2, 3, 4, 8, 9, 12):
            _assert_same_bits(torch, start, end, steps, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_generic_path_past_the_count_limit_matches_torch_bits(dtype, monkeypatch):
    """Past 2^27 (float64) or 2^30 (float32) values the counts no longer multiply exactly: the generic emulation of
    frontend/fused_multiply_add.py takes over, the limit lowered here to reach it."""
    torch = require_torch()
    monkeypatch.setitem(COUNT_LIMIT, "d", 4)
    monkeypatch.setitem(COUNT_LIMIT, "f", 4)
    for start, end in SIGNED_ZERO_BOUNDS + [(-1.3, 2.7), (5.0, -2.0)]:
        for steps in (9, 100, 1001):
            _assert_same_bits(torch, start, end, steps, dtype)
