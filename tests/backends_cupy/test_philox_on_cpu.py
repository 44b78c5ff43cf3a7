"""The CuPy backend's Philox draw (``backends/cupy/philox.py``) run on the CPU (cpu_cuda.py) against NumPy's own
Philox generator, bit for bit: the same seed gives the same dropout masks on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import cpu_cuda
from kiln.backends.cupy.philox import launch_shape, philox_uniform_source
from kiln.compiler.ir.types import DType


def numpy_draw(seed: int, stream: int, n: int, dtype: DType) -> np.ndarray:
    """What the NumPy backend's ``tensor.random_uniform`` draws (the oracle: NumPy's Philox, not ours)."""
    key = np.array([seed & 0xFFFFFFFFFFFFFFFF, stream], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key)).random(n, dtype=dtype.numpy)


def device_draw(seed: int, stream: int, n: int, dtype: DType, grid: tuple[int] | None = None) -> np.ndarray:
    source = philox_uniform_source(dtype)
    out = np.full(n, -1.0, dtype.numpy)
    blocks, threads = launch_shape(n, 256)
    cpu_cuda.run_raw_kernel(source.code, source.name, grid or blocks, threads, (np.array([seed], np.int64), out, np.int64(n), np.uint64(stream)))
    return out


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
@pytest.mark.parametrize(("seed", "stream", "n"), [(0, 0, 1), (1, 0, 3), (12345, 3, 257), (-7, 1, 1001), (2**62, 9, 8)])
def test_the_device_draw_is_numpys_philox_stream(dtype, seed, stream, n):
    np.testing.assert_array_equal(device_draw(seed, stream, n, dtype), numpy_draw(seed, stream, n, dtype))


def test_fewer_blocks_than_elements_still_cover_every_index():
    """The grid-stride loop: 2 blocks of 256 threads draw all 1001 numbers."""
    np.testing.assert_array_equal(device_draw(5, 2, 1001, DType.f32, grid=(2,)), numpy_draw(5, 2, 1001, DType.f32))


def test_seed_and_stream_each_change_the_draw():
    base = device_draw(5, 2, 64, DType.f32)
    assert not np.array_equal(base, device_draw(6, 2, 64, DType.f32)) and not np.array_equal(base, device_draw(5, 3, 64, DType.f32))
    assert 0.0 <= base.min() and base.max() < 1.0
