"""Constructors and samplers with ``dtype=kiln.float16``/``kiln.bfloat16``, against torch's in the same dtype: exact
values for the deterministic ones (``arange``/``linspace`` within 1 ulp: torch computes their steps in float32 or
float64 and rounds once), and the dtype plus the first two moments (5 standard errors) for the random ones, whose
streams differ from torch's."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from half_compare import HALF, NUMPY_HALF, assert_half_close, from_torch, torch_dtype
from oracles import require_torch

NAMES = {"f16": "float16", "bf16": "bfloat16"}

DETERMINISTIC = {
    "tensor": lambda lib, dt: lib.tensor([[0.1, -2.5], [65504.0, 1e-6]], dtype=dt),
    "zeros": lambda lib, dt: lib.zeros(2, 3, dtype=dt),
    "ones": lambda lib, dt: lib.ones((3,), dtype=dt),
    "full": lambda lib, dt: lib.full((2, 2), 0.1, dtype=dt),
    "eye": lambda lib, dt: lib.eye(3, dtype=dt),
    "arange": lambda lib, dt: lib.arange(-1, 1, 0.1, dtype=dt),
    "arange-int-steps": lambda lib, dt: lib.arange(0, 300, 7, dtype=dt),
    "linspace": lambda lib, dt: lib.linspace(-3, 7, 13, dtype=dt),
    "full_like": lambda lib, dt: lib.full_like(lib.zeros(2, 3, dtype=dt), 1 / 3),
    "zeros_like-float32-source": lambda lib, dt: lib.zeros_like(lib.ones(2, 3), dtype=dt),
}


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_constructors_match_torch(name: str, dtype: str):
    torch = require_torch()
    expected = from_torch(DETERMINISTIC[name](torch, torch_dtype(torch, dtype)))
    actual = DETERMINISTIC[name](kiln, getattr(kiln, NAMES[dtype])).numpy()
    assert_half_close(actual, expected, dtype, ulps=1 if name.startswith(("arange", "linspace")) else 0, what=name)


RANDOM = {
    "rand": (lambda lib, dt: lib.rand(20000, dtype=dt), 0.5, 1 / 12),
    "randn": (lambda lib, dt: lib.randn(20000, dtype=dt), 0.0, 1.0),
    "rand_like": (lambda lib, dt: lib.rand_like(lib.zeros(20000, dtype=dt)), 0.5, 1 / 12),
    "randn_like": (lambda lib, dt: lib.randn_like(lib.zeros(20000, dtype=dt)), 0.0, 1.0),
    "normal_": (lambda lib, dt: lib.zeros(20000, dtype=dt).normal_(1.0, 2.0), 1.0, 4.0),
    "uniform_": (lambda lib, dt: lib.zeros(20000, dtype=dt).uniform_(-1.0, 3.0), 1.0, 16 / 12),
    "bernoulli": (lambda lib, dt: lib.bernoulli(lib.full((20000,), 0.3, dtype=dt)), 0.3, 0.21),
    "randint": (lambda lib, dt: lib.randint(0, 5, (20000,), dtype=dt), 2.0, 2.0),
}


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", RANDOM)
def test_random_constructors_draw_in_the_dtype(name: str, dtype: str):
    torch = require_torch()
    make, mean, variance = RANDOM[name]
    kiln.manual_seed(0)
    sample = make(kiln, getattr(kiln, NAMES[dtype])).numpy()
    assert sample.dtype == NUMPY_HALF[dtype]
    assert from_torch(make(torch, torch_dtype(torch, dtype))).shape == sample.shape  # torch takes the same call
    values = sample.astype(np.float64)
    assert abs(values.mean() - mean) < 5 * np.sqrt(variance / values.size), f"{name}: mean {values.mean()}"
    assert abs(values.var() - variance) < 0.05 * variance + 5 * np.sqrt(2 * variance**2 / values.size), f"{name}: variance {values.var()}"
    if name in ("bernoulli", "randint"):
        np.testing.assert_array_equal(values, np.round(values))  # whole numbers, exactly
