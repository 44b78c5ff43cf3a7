"""Max pooling over windows that tile the input runs on contiguous per-offset planes (``lowering_conv._offset_planes``):
bit for bit what the strided-view path gives and what ``np.max``/``np.argmax`` over each window give (the first
largest element wins, a NaN counts as largest), with ties, infinities and NaNs, for several kernels and dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.numpy import lowering_conv

CASES = [((3, 4, 8, 8), (2, 2)), ((2, 3, 4, 4), (2, 2)), ((2, 2, 6, 9), (3, 3)), ((1, 3, 4, 6), (2, 3)), ((2, 1, 5, 4), (1, 2)),
         ((2, 2, 8, 4), (4, 1))]


def _input(shape, dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.maximum(np.round(rng.standard_normal(shape) * 2), 0).astype(dtype)  # after a ReLU: many ties at 0 and above
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 6, replace=False)] = [np.nan, np.nan, np.inf, -np.inf, np.nan, -0.0]
    return x


def _windows(x: np.ndarray, kernel) -> np.ndarray:
    """``(N, C, OH, OW, KH KW)``: each tiling window's elements, row-major."""
    n, c, h, w = x.shape
    (kh, kw) = kernel
    return x.reshape(n, c, h // kh, kh, w // kw, kw).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // kh, w // kw, kh * kw)


def _reference_grad(x: np.ndarray, g: np.ndarray, kernel) -> np.ndarray:
    winner = _windows(x, kernel).argmax(axis=-1)  # the first largest; the first NaN where there is one
    (kh, kw), out = kernel, np.zeros(x.shape, x.dtype)
    for k in range(kh * kw):
        out[:, :, k // kw :: kh, k % kw :: kw] = np.where(winner == k, g, 0)
    return out


def _strided(monkeypatch):
    monkeypatch.setattr(lowering_conv, "_tiles", lambda *args: False)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(f"i{a.itemsize}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, kernel", CASES)
def test_tiled_max_pool_and_its_gradient_match_each_window_and_the_strided_path(shape, kernel, dtype, monkeypatch):
    x = _input(shape, dtype, seed=len(shape) + shape[2])
    g = np.random.default_rng(1).standard_normal(_windows(x, kernel).shape[:4]).astype(dtype)
    geometry = dict(kernel_size=kernel, stride=kernel, padding=(0, 0))
    assert lowering_conv._tiles(x, kernel, kernel, (0, 0))
    pooled, grad = lowering_conv.max_pool2d(x, **geometry), lowering_conv.max_pool2d_grad(x, g, **geometry)
    selected = lowering_conv.max_pool2d_select(x, x * 3, **geometry)
    np.testing.assert_array_equal(pooled, _windows(x, kernel).max(axis=-1))
    np.testing.assert_array_equal(_bits(grad), _bits(_reference_grad(x, g, kernel)))
    _strided(monkeypatch)
    for got, expected in zip((pooled, grad, selected), (lowering_conv.max_pool2d(x, **geometry), lowering_conv.max_pool2d_grad(x, g, **geometry),
                                                        lowering_conv.max_pool2d_select(x, x * 3, **geometry))):
        assert got.shape == expected.shape and got.dtype == expected.dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(_bits(got), _bits(expected))


def test_windows_that_do_not_tile_take_the_strided_path():
    x = np.zeros((1, 1, 6, 6), np.float32)
    assert not lowering_conv._tiles(x, (2, 2), (1, 1), (0, 0))  # overlapping windows
    assert not lowering_conv._tiles(x, (2, 2), (2, 2), (1, 1))  # padding
    assert not lowering_conv._tiles(x[:, :, :5], (2, 2), (2, 2), (0, 0))  # a side the kernel does not divide
    assert not lowering_conv._tiles(x.transpose(0, 1, 3, 2), (2, 2), (2, 2), (0, 0))  # not contiguous
    assert lowering_conv._tiles(x, (3, 2), (3, 2), (0, 0))


def test_offset_planes_round_trip_bit_for_bit():
    x = _input((2, 3, 6, 8), "float32", seed=5)
    planes = lowering_conv._offset_planes(x, (3, 2))
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(_bits(planes[i, j].reshape(2, 3, 2, 4)), _bits(x[:, :, i::3, j::2]))
    np.testing.assert_array_equal(_bits(lowering_conv._from_offset_planes(planes, x.shape, (3, 2))), _bits(x))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 4, 6), (256, 16, 8, 8)])
def test_a_2x2_gradient_without_nans_is_decided_by_the_pair_tournament_bit_for_bit(shape, dtype):
    # ties (ReLU's zeros, rounded values), -0.0 against 0.0 and infinities, no NaN: the tournament decides, and the
    # first largest of each window takes its cotangent
    x = _input(shape, dtype, seed=shape[0])
    x[np.isnan(x)] = np.inf
    x.reshape(-1)[::7] = -0.0
    g = np.random.default_rng(2).standard_normal(_windows(x, (2, 2)).shape[:4]).astype(dtype)
    assert lowering_conv._pair_winner_masks(x) is not None
    grad = lowering_conv.max_pool2d_grad(x, g, kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))
    np.testing.assert_array_equal(_bits(grad), _bits(_reference_grad(x, g, (2, 2))))


def test_a_2x2_window_with_nans_leaves_the_tournament_for_torchs_last_nan():
    x = np.array([[[[np.nan, 1.0], [np.nan, 2.0]]]], np.float32)  # torch's running maximum keeps the last NaN
    assert lowering_conv._pair_winner_masks(x) is None
    grad = lowering_conv.max_pool2d_grad(x, np.ones((1, 1, 1, 1), np.float32), kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))
    np.testing.assert_array_equal(grad, [[[[0, 0], [1, 0]]]])
