"""Quantization-aware training's fake quantization: ``torch.fake_quantize_per_tensor_affine`` and
``torch.fake_quantize_per_channel_affine``, as compositions of core ops with a straight-through gradient.

```python
w_q = kiln.fake_quantize_per_channel_affine(w, scale, zero_point, 0, -128, 127)   # scale float32, zero_point int32
x_q = kiln.fake_quantize_per_tensor_affine(x, 0.05, 128, 0, 255)
```

Forward, as torch's CPU kernels (bit for bit): ``q = round_half_even(x * inv_scale) + zero_point`` with
``inv_scale = 1.0f / scale`` computed in float32, then ``(clamp(q, quant_min, quant_max) - zero_point) * scale``; the
per-tensor kernel also rounds its float64 result to float32. Backward: the gradient passes where ``q`` lies in
``[quant_min, quant_max]`` and is zero where it was clamped; none reaches ``scale`` or ``zero_point`` (torch refuses
one that requires grad: a learnable scale is written by hand with ``(y.round() - y).detach() + y``).

A float32 or float16 per-channel zero point (the learnable-quantization form torch 2.13 accepts) follows torch's other
kernel: ``q = lrintf(zero_point + x * inv_scale)`` (the sum rounded to float32, then half to even), the result
``(clamp(q, quant_min, quant_max) - zero_point) * scale`` computed in float64 and rounded to the input's dtype; no
range check of the zero point, as torch's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.eager_data_dependent import is_eager
from kiln.frontend.tensor import Tensor, apply

__all__ = ["fake_quantize_per_channel_affine", "fake_quantize_per_tensor_affine"]


def fake_quantize_per_tensor_affine(input: Tensor, scale: Any, zero_point: Any, quant_min: int, quant_max: int) -> Tensor:
    """``torch.fake_quantize_per_tensor_affine``: ``scale`` and ``zero_point`` numbers, or one-element tensors (an
    observer's, eager or traced in a compiled step)."""
    call = "fake_quantize_per_tensor_affine"
    _check_input(call, input, quant_min, quant_max)
    scale, zero_point = _one_element(call, "scale", scale, DType.f32), _one_element(call, "zero_point", zero_point, DType.i32)
    if is_eager(zero_point):
        _check_zero_point(call, np.asarray(zero_point.numpy()), quant_min, quant_max)
    return _straight_through(input, scale, zero_point, quant_min, quant_max, round_to_float32=True)


def fake_quantize_per_channel_affine(input: Tensor, scale: Tensor, zero_point: Tensor, axis: int, quant_min: int,
                                     quant_max: int) -> Tensor:
    """``torch.fake_quantize_per_channel_affine``: one float32 ``scale`` and one int32 ``zero_point`` per slice of
    ``input`` along ``axis``."""
    call = "fake_quantize_per_channel_affine"
    _check_input(call, input, quant_min, quant_max)
    axis = _channel_axis(call, input, axis)
    _check_channel_qparams(call, input, scale, zero_point, axis)
    scale, zero_point = _without_grad(call, "scale", scale), _without_grad(call, "zero_point", zero_point)
    along_axis = [1] * input.ndim
    along_axis[axis] = -1
    scale, float_zero_point = scale.reshape(along_axis), zero_point.dtype.is_float
    if float_zero_point:
        return _float_zero_point_straight_through(input, scale, zero_point.reshape(along_axis), quant_min, quant_max)
    if is_eager(zero_point):
        _check_zero_point(call, np.asarray(zero_point.numpy()), quant_min, quant_max)
    return _straight_through(input, scale, zero_point.reshape(along_axis), quant_min, quant_max, round_to_float32=False)


def _straight_through(input: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int,
                      round_to_float32: bool) -> Tensor:
    """The fake-quantized values, carrying ``input``'s gradient where it was not clamped."""
    compute = input.dtype if input.dtype.numpy.itemsize >= 4 else DType.f32
    x = input.detach().to(compute)
    inverse = (1.0 / scale).to(compute)  # float32 reciprocal, then widened: torch's inv_scale = 1.0f / scale
    levels = (x * inverse).round() + zero_point.to(compute)
    inside = (levels >= quant_min) & (levels <= quant_max)
    values = (levels.clamp(quant_min, quant_max) - zero_point.to(compute)) * scale.to(compute)
    if round_to_float32:
        values = values.to(DType.f32)
    return _passing_gradient(input, values, inside)


def _float_zero_point_straight_through(input: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int,
                                       quant_max: int) -> Tensor:
    """torch's kernel for a float zero point: ``lrintf(zero_point + x * inv_scale)``, then ``(clamp(q) - zero_point) *
    scale`` in float64."""
    # A float32 zero point: torch's build fuses the multiply-add (x * inv_scale exact in float64, the sum rounded once
    # to float32); a half one: float32 product and sum (c10's Half + float is not fused); a float64 x: the double sum,
    # rounded to float32 by lrintf. (Each pinned bit for bit by tests/frontend/test_fake_quantize_float_zero_point.py.)
    fused = zero_point.dtype == DType.f32 or input.dtype == DType.f64
    compute = DType.f64 if fused else DType.f32
    inverse = (1.0 / scale).to(compute)
    levels = (input.detach().to(compute) * inverse + zero_point.to(DType.f32).to(compute)).to(DType.f32).round()
    inside = (levels >= quant_min) & (levels <= quant_max)
    values = (levels.clamp(quant_min, quant_max).to(DType.f64) - zero_point.to(DType.f64)) * scale.to(DType.f64)
    return _passing_gradient(input, values, inside)


def _passing_gradient(input: Tensor, values: Tensor, inside: Tensor) -> Tensor:
    """``values`` in ``input``'s dtype, carrying ``input``'s gradient where ``inside`` (the straight-through estimator)."""
    passed = (input - input.detach()) * inside.to(input.dtype)
    return values.to(input.dtype) + passed


def _check_input(call: str, input: Tensor, quant_min: int, quant_max: int) -> None:
    if not isinstance(input, Tensor) or input.dtype.numpy.kind != "f":
        found = input.dtype if isinstance(input, Tensor) else type(input).__name__
        raise TypeError(f"{call}: input must be a floating-point tensor, found {found}; pass input.float()")
    if quant_min > quant_max:
        raise ValueError(f"{call}: quant_min ({quant_min}) must be less than or equal to quant_max ({quant_max})")


def _check_zero_point(call: str, zero_point: np.ndarray, quant_min: int, quant_max: int) -> None:
    if np.any((zero_point < quant_min) | (zero_point > quant_max)):
        raise ValueError(f"{call}: zero_point {zero_point.tolist()} must be between quant_min ({quant_min}) and "
                         f"quant_max ({quant_max})")


def _one_element(call: str, name: str, value: Any, dtype: DType) -> Tensor:
    """A number as a constant of ``dtype``, or a one-element tensor cast to it (a float zero point truncated, as torch's
    kernel reads it), detached."""
    if not isinstance(value, Tensor):
        return _constant(np.asarray(value).astype(dtype.numpy))
    value = _without_grad(call, name, value)
    if any(size != 1 for size in value.shape):
        raise ValueError(f"{call}: {name} must be a number or a one-element tensor, got a tensor of shape {tuple(value.shape)}")
    return value.reshape(()).to(dtype)


def _without_grad(call: str, name: str, value: Tensor) -> Tensor:
    """``value`` detached; an eager one that requires grad is refused, as torch refuses it (no gradient reaches it)."""
    if value.requires_grad and is_eager(value):
        raise ValueError(f"{call}: {name} requires grad, but no gradient reaches it (as in torch); detach it, or "
                         f"write the learnable version by hand: (x / s).round() with a straight-through estimator")
    return value.detach()


def _channel_axis(call: str, input: Tensor, axis: int) -> int:
    if not 0 <= axis < input.ndim:  # torch takes no negative axis here
        raise ValueError(f"{call}: axis must be between 0 and the input's number of dims ({input.ndim}), got {axis}")
    return axis


def _check_channel_qparams(call: str, input: Tensor, scale: Tensor, zero_point: Tensor, axis: int) -> None:
    if not isinstance(scale, Tensor) or scale.dtype.numpy != np.float32:
        found = scale.dtype if isinstance(scale, Tensor) else type(scale).__name__
        raise TypeError(f"{call}: scale must be a float32 tensor (as torch requires), found {found}; pass scale.float()")
    if not isinstance(zero_point, Tensor) or zero_point.dtype not in (DType.i32, DType.f32, DType.f16):
        found = zero_point.dtype if isinstance(zero_point, Tensor) else type(zero_point).__name__
        raise TypeError(f"{call}: zero_point must be an int32, float32 or float16 tensor (as torch requires), found "
                        f"{found}; pass zero_point.int(), or zero_point.float() for the learnable-quantization form")
    channels = input.shape[axis]
    if scale.ndim != 1 or zero_point.ndim != 1 or scale.shape[0] != channels or zero_point.shape[0] != channels:
        raise ValueError(f"{call}: scale {tuple(scale.shape)} and zero_point {tuple(zero_point.shape)} must be 1-D with "
                         f"one entry per slice along axis {axis} of the input {tuple(input.shape)} ({channels})")


def _constant(value: np.generic) -> Tensor:
    return apply("tensor.constant", value=np.asarray(value))
