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


INPUT_GRADS = [  # (N, C, H, W), O, groups, kernel, stride, padding, dilation
    ((2, 16, 4, 4), 32, 1, (3, 3), (1, 1), (1, 1), (1, 1)),  # W5's second convolution
    ((2, 3, 7, 6), 4, 1, (3, 2), (1, 1), (0, 1), (1, 1)),
    ((2, 4, 9, 8), 6, 2, (3, 3), (1, 1), (2, 1), (2, 1)),  # groups, dilation
    ((1, 3, 6, 6), 3, 3, (3, 3), (1, 1), (1, 1), (1, 1)),  # depthwise
    ((2, 2, 6, 6), 2, 1, (3, 3), (1, 1), (3, 1), (1, 1)),  # padding beyond the kernel: the scatter
    ((2, 2, 7, 7), 3, 1, (3, 3), (2, 2), (1, 1), (1, 1)),  # stride 2: the scatter
]


@pytest.mark.parametrize("shape, out_channels, groups, kernel, stride, padding, dilation", INPUT_GRADS)
def test_input_gradient_as_a_convolution_is_the_scattered_columns_gradient(shape, out_channels, groups, kernel, stride, padding, dilation):
    rng = np.random.default_rng(sum(shape) + out_channels)
    weight = rng.standard_normal((out_channels, shape[1] // groups) + kernel)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = lowering_conv.conv2d(rng.standard_normal(shape), weight, **geometry)
    g = rng.standard_normal(y.shape)
    expected = lowering_conv._scattered_input_grad(g, weight, input_shape=shape, **geometry)  # float64
    got = lowering_conv.conv2d_input_grad(g.astype(np.float32), weight.astype(np.float32), input_shape=shape, **geometry)
    assert got.shape == shape and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    exact = lowering_conv.conv2d_input_grad(g, weight, input_shape=shape, **geometry)
    np.testing.assert_allclose(exact, expected, rtol=1e-12, atol=1e-12)
    # the gradient of sum(g * conv(x)) in x, by finite differences at one element
    x = rng.standard_normal(shape)
    step, index = 1e-6, (0, shape[1] - 1, 1, shape[3] - 2)
    bumped = x.copy()
    bumped[index] += step
    loss = lambda inputs: np.sum(g * lowering_conv.conv2d(inputs, weight, **geometry))  # noqa: E731
    assert (loss(bumped) - loss(x)) / step == pytest.approx(exact[index], rel=1e-5, abs=1e-6)
