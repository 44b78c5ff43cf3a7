"""im2col columns (``lowering_conv._columns``): channels-last, or offset-major for one input channel per group (a grey
first layer, a depthwise convolution), both equal to every window read off NumPy's ``sliding_window_view``, and the
convolution and weight gradient built on them equal to a float64 einsum over those windows."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from kiln.backends.numpy import lowering_conv

GEOMETRIES = [  # (N, C, H, W), groups, kernel, stride, padding, dilation
    ((3, 1, 8, 8), 1, (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 1, 7, 9), 1, (3, 2), (2, 1), (0, 2), (1, 2)),
    ((2, 4, 6, 5), 4, (3, 3), (1, 2), (1, 0), (2, 1)),  # depthwise
    ((2, 6, 5, 5), 3, (2, 2), (1, 1), (1, 1), (1, 1)),  # two channels per group: channels-last
    ((1, 3, 6, 6), 1, (3, 3), (2, 2), (1, 1), (1, 1)),
]


def _reference_columns(x, groups, kernel, stride, padding, dilation):
    """``(groups, N OH OW, KH KW C/groups)`` from NumPy's windows of the zero-padded input."""
    n, c = x.shape[:2]
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    windows = sliding_window_view(padded, span, axis=(2, 3))[:, :, :: stride[0], :: stride[1], :: dilation[0], :: dilation[1]]
    oh, ow = windows.shape[2:4]
    grouped = windows.reshape(n, groups, c // groups, oh, ow, *kernel).transpose(1, 0, 3, 4, 5, 6, 2)
    return grouped.reshape(groups, n * oh * ow, -1)


@pytest.mark.parametrize("shape, groups, kernel, stride, padding, dilation", GEOMETRIES)
def test_columns_are_the_windows_and_the_gemms_on_them_are_the_convolution(shape, groups, kernel, stride, padding, dilation):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    columns = lowering_conv.conv2d_columns(x, kernel=kernel, **geometry)
    expected = _reference_columns(x, groups, kernel, stride, padding, dilation)
    assert columns.shape == expected.shape
    np.testing.assert_array_equal(columns, expected)
    weight = rng.standard_normal((2 * groups, shape[1] // groups) + kernel).astype(np.float32)
    windows = expected.astype(np.float64).reshape(groups, -1, *kernel, shape[1] // groups)  # (g, N OH OW, KH, KW, C/g)
    per_group = weight.astype(np.float64).reshape(groups, 2, shape[1] // groups, *kernel)
    y = np.einsum("gpijc,gocij->gop", windows, per_group)  # (g, O/g, N OH OW)
    got = lowering_conv.conv2d(x, weight, **geometry)
    n, (oh, ow) = shape[0], got.shape[2:]
    np.testing.assert_allclose(got, y.reshape(2 * groups, n, oh, ow).transpose(1, 0, 2, 3), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(got.shape).astype(np.float32)
    rows = g.astype(np.float64).transpose(1, 0, 2, 3).reshape(groups, 2, -1)
    dw = np.einsum("gop,gpijc->gocij", rows, windows).reshape(weight.shape)
    np.testing.assert_allclose(lowering_conv.conv2d_weight_grad(x, g, weight_shape=weight.shape, **geometry), dw, rtol=1e-4, atol=1e-4)
