"""The NumPy backend's float32 ``tensor.random_uniform`` (vectorized from Philox's raw 64-bit words) gives NumPy's own
``Generator(Philox(key=(seed, stream))).random(shape, dtype=float32)`` bit for bit: the masks of every saved seed stay."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.numpy.lowering import NUMPY
from kiln.compiler.ir.types import DType

SHAPES = [(), (1,), (7,), (4, 5), (16, 32, 64), (3, 0, 2), (2, 3, 5, 7)]


def _numpy_draw(seed: int, stream: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    key = np.array([seed & 0xFFFFFFFFFFFFFFFF, stream], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key)).random(shape, dtype=dtype)


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed, stream", [(0, 0), (123456789, 3), (2**62 - 1, 15), (-5, 1)])
def test_the_kernel_draws_numpys_numbers(seed, stream, shape, dtype):
    kernel = NUMPY.get("tensor.random_uniform")
    drawn = np.asarray(kernel(np.asarray(seed, np.int64), np.empty(shape, np.float32), dtype=dtype, stream=stream))
    expected = np.asarray(_numpy_draw(seed, stream, shape, dtype.numpy))
    assert drawn.dtype == expected.dtype and drawn.shape == expected.shape
    np.testing.assert_array_equal(drawn, expected)
    assert drawn.size == 0 or (drawn.min() >= 0 and drawn.max() < 1)
