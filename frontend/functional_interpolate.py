"""``F.interpolate`` with PyTorch's modes, sizes and arithmetic (``nearest``, ``nearest-exact``, ``linear``/``bilinear``/
``trilinear``, ``bicubic``, ``area``).

Re-exported by ``frontend/functional_spatial.py``. ``nearest`` is one ``tensor.take`` per axis with constant indices;
``linear``/``bilinear``/``trilinear`` is separable: along each axis, last first as PyTorch's kernel nests them,
``take(x, i0) l0 + take(x, i1) l1`` with PyTorch's source indices and weights, computed here at trace time with its
exact float arithmetic (float32 indices for float32 inputs, as its CPU kernel; a float16 or bfloat16 input is
interpolated in float32 and rounded once, as PyTorch's). ``area`` is an adaptive average pool.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.frontend.functional_half import in_opmath
from kiln.frontend.functional_interpolate_antialias import antialiased_resize, check_antialias
from kiln.frontend.functional_conv import adaptive_avg_pool2d
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error
from kiln.frontend.functional_edge_pad import _static_dims, _take


LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3}
"""Each linear mode and the number of spatial dims it takes, as PyTorch."""

REFUSED_MODES = ("lanczos",)

CUBIC_A = -0.75
"""PyTorch's cubic convolution parameter (Keys' kernel with a = -0.75, as OpenCV)."""


def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest", align_corners: bool | None = None,
                recompute_scale_factor: bool | None = None, antialias: bool = False) -> Tensor:
    """Resize the spatial dims of ``(N, C, *spatial)`` to ``size`` or ``floor(spatial * scale_factor)``, as PyTorch.

    Modes: ``nearest`` (source ``floor(i scale)``, the OpenCV rule PyTorch keeps), ``nearest-exact`` (``floor((i + 0.5)
    scale)``), ``linear`` (3-D), ``bilinear`` and ``bicubic`` (4-D), ``trilinear`` (5-D) with ``align_corners``, and ``area``
    (adaptive average pooling). ``scale = 1 / scale_factor`` when a scale factor is given (and
    ``recompute_scale_factor`` is not set), else ``in / out`` -- which differ for non-integer factors, as in PyTorch.
    Spatial dims must be static; batch and channel dims may be symbolic.
    """
    spatial = input.ndim - 2
    _check_interpolate_mode(input, mode, align_corners, antialias)
    sizes = _static_dims("interpolate", input, range(2, input.ndim))
    outputs, scales = _output_sizes(input, sizes, size, scale_factor, recompute_scale_factor)
    if mode == "area":
        return _area(input, outputs)
    if antialias:
        return in_opmath(lambda x: antialiased_resize(x, sizes, outputs, scales, mode, bool(align_corners)), input)

    def resize(result: Tensor) -> Tensor:
        for axis in reversed(range(spatial)):  # the last axis first, as PyTorch's kernel nests the axes
            result = _resize_axis(result, 2 + axis, sizes[axis], outputs[axis], scales[axis], mode, bool(align_corners))
        return result

    # a half input interpolates in float32 (weights and sums) and rounds once, as PyTorch's CPU kernel; nearest only gathers
    from kiln.frontend.view_writes import own_storage  # lazily: it builds on the tensor

    result = in_opmath(resize, input) if mode in LINEAR_MODES or mode == "bicubic" else resize(input)
    return own_storage(result, input)  # a new tensor, as torch's (an unchanged size gave the input itself)


def _check_interpolate_mode(input: Tensor, mode: str, align_corners: bool | None, antialias: bool) -> None:
    if mode in REFUSED_MODES:
        raise located_error(f"interpolate: mode {mode!r} is not supported in kiln; use 'bilinear', 'nearest', 'nearest-exact' "
                            f"or 'area'")
    if mode not in ("nearest", "nearest-exact", "area", "bicubic", *LINEAR_MODES):
        raise located_error(f"interpolate: unknown mode {mode!r}; one of 'nearest', 'nearest-exact', 'linear', 'bilinear', "
                            f"'bicubic', 'trilinear', 'area'")
    if antialias:
        check_antialias(input, mode)
    if mode in ("nearest", "nearest-exact", "area") and align_corners is not None:
        raise located_error("interpolate: align_corners can only be set with the interpolating modes linear, bilinear, "
                            f"bicubic and trilinear, not {mode!r} (as PyTorch); leave it None")
    if input.ndim not in (3, 4, 5):
        raise located_error(f"interpolate expects a 3-D, 4-D or 5-D (N, C, *spatial) input, got {input.type}")
    if mode in LINEAR_MODES and input.ndim != LINEAR_MODES[mode] + 2:
        raise located_error(f"interpolate: mode {mode!r} needs a {LINEAR_MODES[mode] + 2}-D input, got {input.type}; "
                            f"use {next(m for m, d in LINEAR_MODES.items() if d == input.ndim - 2)!r} for this one")
    if mode == "bicubic" and input.ndim != 4:
        raise located_error(f"interpolate: mode 'bicubic' needs a 4-D (N, C, H, W) input, got {input.type}")


def _output_sizes(input: Tensor, sizes: list[int], size: Any, scale_factor: Any,
                  recompute_scale_factor: bool | None) -> tuple[list[int], list[float | None]]:
    """``(output sizes, the scale factors the kernel uses or None)``, by PyTorch's rules: exactly one of ``size`` and
    ``scale_factor``; ``floor(in * factor)`` outputs; the factors forgotten when ``recompute_scale_factor``."""
    if (size is None) == (scale_factor is None):
        raise located_error("interpolate: pass exactly one of size and scale_factor "
                            f"(got size={size!r}, scale_factor={scale_factor!r})")
    if size is not None:
        if recompute_scale_factor:
            raise located_error("interpolate: recompute_scale_factor is not meaningful with an explicit size")
        outputs = [int(s) for s in _per_axis("size", size, len(sizes), input)]
        scales: list[float | None] = [None] * len(sizes)
    else:
        factors = [float(f) for f in _per_axis("scale_factor", scale_factor, len(sizes), input)]
        outputs = [int(math.floor(float(s) * f)) for s, f in zip(sizes, factors)]
        scales = [None] * len(sizes) if recompute_scale_factor else list(factors)
    if min(outputs) < 1:
        raise located_error(f"interpolate: input and output sizes must be greater than 0, got input {tuple(sizes)} and "
                            f"output {tuple(outputs)}")
    return outputs, scales


def _per_axis(name: str, value: Any, count: int, input: Tensor) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        return [value] * count
    if len(value) != count:
        raise located_error(f"interpolate: {name} {tuple(value)} must have one entry per spatial dim of {input.type} ({count})")
    return list(value)


def _area(input: Tensor, outputs: list[int]) -> Tensor:
    """PyTorch's ``area`` mode is adaptive average pooling to the output size (1-D as 2-D of height 1; 3-D volumes by
    ``adaptive_avg_pool3d``)."""
    if input.ndim == 3:
        return adaptive_avg_pool2d(input.unsqueeze(2), (1, outputs[0])).squeeze(2)
    if input.ndim == 5:
        from kiln.frontend.functional_conv3d import adaptive_avg_pool3d  # lazily: it builds on the 2-D functions

        return adaptive_avg_pool3d(input, tuple(outputs))
    return adaptive_avg_pool2d(input, tuple(outputs))


def _resize_axis(input: Tensor, axis: int, size: int, out: int, scale: float | None, mode: str, align_corners: bool) -> Tensor:
    """One axis of ``interpolate``: a gather (nearest) or two gathers and their weights (linear)."""
    if mode == "nearest":
        return _take(input, _nearest_indices(size, out, scale, shortcuts=input.ndim == 4), axis)
    if mode == "nearest-exact":
        return _take(input, _nearest_exact_indices(size, out, scale), axis)
    if out == size:  # PyTorch copies: weights (1, 0) on the same cell (bicubic's: (0, 1, 0, 0))
        return input
    broadcast = (out,) + (1,) * (input.ndim - 1 - axis)
    if mode == "bicubic":
        taps, weights = _cubic_indices_and_weights(size, out, scale, align_corners, input.dtype.numpy)
        terms = [_take(input, index, axis) * weight.reshape(broadcast) for index, weight in zip(taps, weights)]
        return ((terms[0] + terms[1]) + terms[2]) + terms[3]  # PyTorch's cubic_interp1d order
    first, second, weight0, weight1 = _linear_indices_and_weights(size, out, scale, align_corners, input.dtype.numpy)
    return _take(input, first, axis) * weight0.reshape(broadcast) + _take(input, second, axis) * weight1.reshape(broadcast)


def _cubic_indices_and_weights(size: int, out: int, scale: float | None, align_corners: bool, dtype: Any):
    """The 4 taps ``floor(src) - 1 .. + 2`` (clamped to the input) and their weights, as PyTorch's bicubic kernel: the
    source ``ratio * i`` (``align_corners``) or ``scale (i + 0.5) - 0.5``, not clamped at 0 as linear's is;
    ``t = clamp(src - floor(src), 0, 1)``; Keys' cubic convolution with ``A = -0.75`` at ``t + 1, t, 1 - t, 2 - t``."""
    real = np.dtype(dtype).type
    positions = np.arange(out).astype(real)
    if align_corners:
        source = (real(size - 1) / real(out - 1) if out > 1 else real(0)) * positions
    else:
        source = _kernel_scale(size, out, scale, real) * (positions + real(0.5)) - real(0.5)
    floor = np.minimum(np.floor(source.astype(np.float32)).astype(np.int64), size - 1)  # PyTorch's floorf
    t = np.clip(source - floor.astype(real), real(0), real(1)).astype(real)
    a = real(CUBIC_A)

    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return ((a + real(2)) * x - (a + real(3))) * x * x + real(1)

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((a * x - real(5) * a) * x + real(8) * a) * x - real(4) * a

    weights = [far(t + real(1)), near(t), near(real(1) - t), far(real(2) - t)]
    taps = [np.clip(floor - 1 + j, 0, size - 1) for j in range(4)]
    return taps, [w.astype(real) for w in weights]


def _kernel_scale(size: int, out: int, scale: float | None, real: type) -> Any:
    """PyTorch's ``compute_scales_value``: ``1 / scale_factor`` when one is given, else ``in / out``, in ``real``."""
    return real(1.0 / scale) if scale is not None and scale > 0 else real(size) / real(out)


def _nearest_indices(size: int, out: int, scale: float | None, shortcuts: bool) -> np.ndarray:
    """``nearest``: ``min(floor(i scale), in - 1)`` in float32. PyTorch's 2-D kernel (``shortcuts``) first copies an
    axis whose size is kept and halves the index of a doubled one, whatever the scale factor; its 1-D and 3-D kernels
    compute every index from the scale (so ``scale_factor=1.1`` on a length of 2 reads cell 0 twice)."""
    if shortcuts and out == size:
        return np.arange(out)
    if shortcuts and out == 2 * size:
        return np.arange(out) >> 1
    positions = np.arange(out).astype(np.float32) * _kernel_scale(size, out, scale, np.float32)
    return np.minimum(np.floor(positions).astype(np.int64), size - 1)


def _nearest_exact_indices(size: int, out: int, scale: float | None) -> np.ndarray:
    """``nearest-exact``: ``min(floor((i + 0.5) scale), in - 1)``; PyTorch multiplies in double by the float32 scale
    and floors after rounding to float32 (``floorf``)."""
    positions = (np.arange(out) + 0.5) * np.float64(_kernel_scale(size, out, scale, np.float32))
    return np.minimum(np.floor(positions.astype(np.float32)).astype(np.int64), size - 1)


def _linear_indices_and_weights(size: int, out: int, scale: float | None, align_corners: bool, dtype: Any):
    """``(i0, i1, l0, l1)`` of PyTorch's ``compute_source_index_and_lambda``, in the input's float type: the source
    ``ratio * i`` (``align_corners``, ``ratio = (in - 1) / (out - 1)``) or ``max(ratio (i + 0.5) - 0.5, 0)``,
    ``i0 = min(floor(src), in - 1)``, ``i1 = min(i0 + 1, in - 1)``, ``l1 = clamp(src - i0, 0, 1)``, ``l0 = 1 - l1``."""
    real = np.dtype(dtype).type
    positions = np.arange(out).astype(real)
    if align_corners:
        ratio = real(size - 1) / real(out - 1) if out > 1 else real(0)
        source = ratio * positions
    else:
        source = np.maximum(_kernel_scale(size, out, scale, real) * (positions + real(0.5)) - real(0.5), real(0))
    first = np.minimum(np.floor(source.astype(np.float32)).astype(np.int64), size - 1)  # PyTorch's floorf
    weight1 = np.clip(source - first.astype(real), real(0), real(1)).astype(real)
    second = first + (first < size - 1)
    return first, second, (real(1) - weight1).astype(real), weight1
