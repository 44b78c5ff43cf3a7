"""``kiln.fake_quantize_per_tensor_affine`` / ``fake_quantize_per_channel_affine`` against torch 2.13's CPU kernels:
values bit for bit (inputs placed on and a hair either side of every rounding boundary, float32 and float64), the
straight-through gradient (passes where not clamped), in ``kiln.compile`` too, and torch's refusals."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

SCALES = (0.1, 0.037, 1 / 3, 0.0123456789, 0.7)


def _boundary_grid(scale: float) -> np.ndarray:
    """Half-integer multiples of ``scale`` (in float64 and in float32) nudged by up to 1e-7: where rounding flips,
    over a range wider than [-128, 127] levels, so both sides of each clamp are hit."""
    base = np.arange(-135, 135) + 0.5
    nudges = np.linspace(-1e-7, 1e-7, 9)
    return np.concatenate([base * s + d for s in (scale, float(np.float32(scale))) for d in nudges])


def _value_and_gradient(lib, array, dtype, quantize):
    x = lib.tensor(array, dtype=getattr(lib, dtype), requires_grad=True)
    y = quantize(lib, x)
    (y * lib.tensor(np.linspace(-1, 2, array.size).reshape(array.shape), dtype=getattr(lib, dtype))).sum().backward()
    return str(y.dtype).split(".")[-1], y.detach().numpy().astype(np.float64), x.grad.numpy().astype(np.float64)


def _same_as_torch(array, dtype, quantize):
    torch = require_torch()
    (their_dtype, theirs, their_grad), (our_dtype, ours, our_grad) = (_value_and_gradient(lib, array, dtype, quantize) for lib in (torch, kiln))
    assert our_dtype == their_dtype
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(our_grad, their_grad)
    assert 0 < their_grad.astype(bool).mean() < 1  # some elements clamped, some passed


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("qparams", ["numbers", "tensors"])
def test_per_tensor_is_torchs_bit_for_bit(dtype, scale, qparams):
    def quantize(lib, x):
        if qparams == "numbers":
            return lib.fake_quantize_per_tensor_affine(x, scale, 3, -128, 127)
        return lib.fake_quantize_per_tensor_affine(x, lib.tensor(scale), lib.tensor(3, dtype=lib.int32), -128, 127)

    _same_as_torch(_boundary_grid(scale), dtype, quantize)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [0, 1])
def test_per_channel_is_torchs_bit_for_bit(dtype, axis):
    columns = np.stack([_boundary_grid(s) for s in SCALES], 1)
    array = columns if axis else columns.T
    zero_points = np.array([0, 3, -2, 1, 5], np.int32)

    def quantize(lib, x):
        scale = lib.tensor(np.array(SCALES, np.float32))
        return lib.fake_quantize_per_channel_affine(x, scale, lib.tensor(zero_points), axis, -128, 127)

    _same_as_torch(array, dtype, quantize)


def test_per_channel_of_a_conv_weight_in_a_compiled_step_is_torchs():
    """A conv weight (out, in, kh, kw) quantized per output channel, unsigned 4-bit, in a ``kiln.compile``d forward."""
    torch = require_torch()
    rng = np.random.default_rng(0)
    weight, x = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal((2, 2, 5, 5))
    scale, zero_points = np.array([0.2, 0.1, 0.3, 0.05], np.float32), np.array([7, 8, 6, 9], np.int32)

    def quantized_conv(lib):
        class QuantizedConv(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = lib.nn.Parameter(lib.tensor(weight))
                self.register_buffer("scale", lib.tensor(scale))
                self.register_buffer("zero_point", lib.tensor(zero_points))

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
    lambda lib, x: lib.fake_quantize_per_tensor_affine(x, 0.1, 0, 10, 5),
    lambda lib, x: lib.fake_quantize_per_tensor_affine(x, 0.1, 300, -128, 127),
    lambda lib, x: lib.fake_quantize_per_tensor_affine(x.long(), 0.1, 0, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4), lib.zeros(4, dtype=lib.int32), 2, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4), lib.zeros(4, dtype=lib.int32), -1, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(3), lib.zeros(3, dtype=lib.int32), 1, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4).double(), lib.zeros(4, dtype=lib.int32), 1, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4), lib.zeros(4, dtype=lib.int64), 1, 0, 255),
    lambda lib, x: lib.fake_quantize_per_channel_affine(x, lib.ones(4), lib.full((4,), 300, dtype=lib.int32), 1, 0, 255),
])
def test_refuses_what_torch_refuses(call):
    torch = require_torch()
    with pytest.raises((RuntimeError, IndexError)):
        call(torch, torch.ones(3, 4))
    with pytest.raises((ValueError, TypeError)) as error:
        call(kiln, kiln.ones(3, 4))
    assert "fake_quantize_per_" in str(error.value)


def test_a_scale_that_requires_grad_is_refused_as_torch():
    torch = require_torch()
    for lib, error in ((torch, RuntimeError), (kiln, ValueError)):
        scale = lib.tensor(0.1, requires_grad=True)
        with pytest.raises(error, match="scale"):
            lib.fake_quantize_per_tensor_affine(lib.ones(3), scale, lib.tensor(0, dtype=lib.int32), 0, 255).sum().backward()


def test_per_tensor_qparams_computed_in_a_compiled_forward_are_torchs():
    """An observer's scale and zero point computed from buffers inside ``kiln.compile(fullgraph=True)``: traced tensors,
    taken as torch's kernel takes them (scale to float32, zero point truncated to int32)."""
    torch = require_torch()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6)) * 2

    def observed(lib):
        class Observed(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("low", lib.tensor(-2.5))
                self.register_buffer("high", lib.tensor(3.1))
                self.weight = lib.nn.Parameter(lib.tensor(np.linspace(0.5, 1.5, 6)))

            def forward(self, x):
                scale = (self.high - self.low) / 255
                zero_point = -self.low / scale  # a float tensor: truncated
                return lib.fake_quantize_per_tensor_affine(x * self.weight, scale, zero_point, 0, 255).square().sum()

        return Observed()

    model, twin = observed(kiln), observed(torch)
    ours, theirs = kiln.compile(model, fullgraph=True)(kiln.tensor(x)), twin(torch.tensor(x))
    ours.backward()
    theirs.backward()
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-15)
    np.testing.assert_allclose(model.weight.grad.numpy(), twin.weight.grad.numpy(), rtol=1e-13)
