"""``kiln.fake_quantize_per_channel_affine`` with a float32 or float16 zero point (torch 2.13's learnable-quantization
form, its own CPU kernel: ``lrintf(zero_point + x * inv_scale)``, no range check of the zero point): values and the
straight-through gradient bit for bit against torch, inputs on and a hair either side of every rounding boundary, in
float16/float32/float64 and in a ``kiln.compile``d forward; and what torch refuses."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

SCALES = np.array([0.1, 0.037, 1 / 3, 0.0123456789, 0.7], np.float32)
ZERO_POINTS = np.array([0.4, -2.6, 3.5, 7.25, -130.5], np.float32)  # the last outside [-128, 127]: torch takes it


def _boundary_grid(scale: float, zero_point: float) -> np.ndarray:
    """Where ``x / scale + zero_point`` is a half integer, nudged by up to 1e-6 relative, over more than the levels."""
    base = (np.arange(-140, 140) + 0.5 - zero_point) * scale
    return np.concatenate([base * (1 + d) for d in np.linspace(-1e-6, 1e-6, 7)])


def _grid(axis: int) -> np.ndarray:
    columns = np.stack([_boundary_grid(float(s), float(z)) for s, z in zip(SCALES, ZERO_POINTS)], 1)
    return columns if axis else columns.T


def _quantized(lib, array, dtype, zero_point_dtype, axis):
    x = lib.tensor(array, dtype=getattr(lib, dtype), requires_grad=True)
    zero_point = lib.tensor(ZERO_POINTS).to(getattr(lib, zero_point_dtype))
    y = lib.fake_quantize_per_channel_affine(x, lib.tensor(SCALES), zero_point, axis, -128, 127)
    (y * lib.tensor(np.linspace(-1, 2, array.size).reshape(array.shape), dtype=getattr(lib, dtype))).sum().backward()
    return str(y.dtype).split(".")[-1], y.detach().numpy().astype(np.float64), x.grad.numpy().astype(np.float64)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("zero_point_dtype", ["float32", "float16"])
@pytest.mark.parametrize("axis", [0, 1])
def test_a_float_zero_point_is_torchs_bit_for_bit(dtype, zero_point_dtype, axis):
    torch = require_torch()
    array = _grid(axis)
    (their_dtype, theirs, their_grad), (our_dtype, ours, our_grad) = (
        _quantized(lib, array, dtype, zero_point_dtype, axis) for lib in (torch, kiln))
    assert our_dtype == their_dtype == dtype
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(our_grad, their_grad)
    assert 0 < their_grad.astype(bool).mean() < 1  # some elements clamped, some passed


def test_a_float_zero_point_in_a_compiled_forward_is_torchs():
    """A conv weight quantized per output channel with a float zero point (as a learnable-QAT observer keeps it)."""
    torch = require_torch()
    rng = np.random.default_rng(1)
    weight, x = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((2, 2, 5, 5))
    scale, zero_point = np.array([0.2, 0.1, 0.3, 0.05], np.float32), np.array([7.3, 8.5, 6.0, 9.9], np.float32)

    def quantized_conv(lib):
        class QuantizedConv(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = lib.nn.Parameter(lib.tensor(weight))
                self.register_buffer("scale", lib.tensor(scale))
                self.register_buffer("zero_point", lib.tensor(zero_point))

            def forward(self, x):
                w = lib.fake_quantize_per_channel_affine(self.weight, self.scale, self.zero_point, 0, 0, 15)
                return lib.nn.functional.conv2d(x, w).square().mean()

        return QuantizedConv()

    model, twin = quantized_conv(kiln), quantized_conv(torch)
    ours, theirs = kiln.compile(model)(kiln.tensor(x)), twin(torch.tensor(x))
    ours.backward()
    theirs.backward()
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-14)
    np.testing.assert_allclose(model.weight.grad.numpy(), twin.weight.grad.numpy(), rtol=1e-13, atol=1e-15)
    assert (twin.weight.grad == 0).any()  # some weights clamped


@pytest.mark.parametrize("call", [
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4), lib.zeros(4, dtype=lib.float64), 1, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4), lib.zeros(4, dtype=lib.bfloat16), 1, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4), lib.zeros(4, dtype=lib.int64), 1, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4), lib.zeros(4, requires_grad=True), 1, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4, requires_grad=True), lib.zeros(4), 1, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4, requires_grad=True),
                                                        lib.zeros(4, dtype=lib.int32), 1, 0, 255),
])
def test_refuses_the_zero_points_and_learnable_qparams_torch_refuses(call):
    torch = require_torch()
    with pytest.raises(RuntimeError):
        call(torch, torch.ones(3, 4, requires_grad=True)).sum().backward()
    with pytest.raises((ValueError, TypeError), match="fake_quantize_per_channel_affine: (zero_point|scale)"):
        call(kiln, kiln.ones(3, 4, requires_grad=True)).sum().backward()
