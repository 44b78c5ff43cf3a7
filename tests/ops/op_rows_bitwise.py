"""Op-table rows of the integer bit ops (``compiler/ops/bitwise.py``): int32 and int64 over the whole range, shift
counts from below 0 to past the widths. NumPy's ufuncs are the references: their meaning at every count is
PyTorch's (``tests/ops/test_bitwise_vs_torch.py`` pins that), while the kernels spell it out for CuPy."""

from __future__ import annotations

import numpy as np

from ops.op_table import BINARY_CASES, UNARY_CASES, OpRow

INTEGERS = ("i32", "i64")


def full_range(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    """Every bit pattern as likely: both signs and the extremes."""
    return [rng.integers(np.iinfo(d).min, np.iinfo(d).max, size=s, dtype=d, endpoint=True) for s, d in zip(shapes, dtypes)]


def value_and_count(rng: np.random.Generator, shapes, dtypes, attrs) -> list[np.ndarray]:
    """A full-range value and a shift count in [-3, 70]: negative, in range, and past 32 and 64 bits."""
    value, _ = full_range(rng, shapes, dtypes, attrs)
    return [value, rng.integers(-3, 71, size=shapes[1]).astype(dtypes[1])]


BITWISE_ROWS = [
    OpRow("tensor.bitwise_and", np.bitwise_and, BINARY_CASES, full_range, False, INTEGERS),
    OpRow("tensor.bitwise_or", np.bitwise_or, BINARY_CASES, full_range, False, INTEGERS),
    OpRow("tensor.bitwise_xor", np.bitwise_xor, BINARY_CASES, full_range, False, INTEGERS),
    OpRow("tensor.bitwise_not", np.invert, UNARY_CASES, full_range, False, INTEGERS),
    OpRow("tensor.left_shift", np.left_shift, BINARY_CASES, value_and_count, False, INTEGERS),
    OpRow("tensor.right_shift", np.right_shift, BINARY_CASES, value_and_count, False, INTEGERS),
]
