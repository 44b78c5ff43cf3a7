"""Spatial functions with PyTorch's names and layouts: the edge modes of ``F.pad``, ``F.interpolate``, ``F.pixel_shuffle``,
``F.unfold``/``F.fold``, ``F.glu``, ``F.hardsigmoid``, channel dropout and ``F.bilinear``.

Re-exported by ``frontend/functional.py``. Nothing here is a new op: each function is a few existing primitives, so
every backend, the autodiff rules and ONNX export serve it unchanged.

- The edge pads (``reflect``, ``replicate``, ``circular``) and ``nearest`` interpolation are one ``tensor.take`` per
  axis with constant indices (the mirrored, clamped or wrapped source of every output cell); the gradient is the
  matching ``tensor.scatter_add``, which sums what several outputs read from one cell.
- ``linear``/``bilinear``/``trilinear`` interpolation is separable: along each axis, last first as PyTorch's kernel
  nests them, ``take(x, i0) l0 + take(x, i1) l1`` with PyTorch's source indices and weights, computed here at trace
  time with its exact float arithmetic (float32 indices for float32 inputs, as its CPU kernel; a float16 or bfloat16
  input is interpolated in float32 and rounded once, as PyTorch's).
- ``pixel_shuffle`` and ``channel_shuffle`` are reshape, transpose, reshape.
- ``unfold`` (im2col) is one ``tensor.take`` of every window's cells from the padded image flattened to
  ``(N, C, Hp Wp)``; ``fold``, its adjoint, is the matching ``tensor.scatter_add``, which sums overlapping windows.
  Only gathers and adds, so values are exact and an ``inf`` stays in its own windows (a one-hot convolution would
  spread NaNs), and both lower to ONNX (Gather, ScatterElements) for inference and training alike.
- Channel dropout draws one ``nn.dropout`` keep/scale factor per ``(N, C)`` on a ``(N, C, 1, ...)`` tensor of ones
  and broadcasts it over the spatial dims.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.types import DType, normalize_axis
from kiln.frontend.functional_half import in_opmath
from kiln.frontend.functional_conv import adaptive_avg_pool2d
from kiln.frontend.functional_nn import _pair, dropout, pad
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error, user_location
from kiln.frontend.tensor_inplace import honors_inplace


def _take(input: Tensor, indices: Sequence[int], axis: int) -> Tensor:
    """``input[..., indices, ...]`` along ``axis``: one ``tensor.take`` with a constant int64 index vector, or
    ``input`` itself when the indices read the whole axis in order."""
    indices = np.asarray(indices, np.int64)
    if input.shape[axis] == len(indices) and np.array_equal(indices, np.arange(len(indices))):
        return input
    return apply("tensor.take", input, indices, axis=axis)


def _static_dims(function: str, input: Tensor, axes: Sequence[int]) -> list[int]:
    """The sizes of ``axes``, which must be static (a symbolic batch dim elsewhere is fine)."""
    sizes = [input.shape[axis] for axis in axes]
    if any(isinstance(size, str) for size in sizes):
        raise located_error(f"{function} needs static sizes for dims {tuple(axes)}, got {input.type}")
    return [int(size) for size in sizes]


# Padding from the edges -------------------------------------------------------------------------------------------

EDGE_MODES = ("reflect", "replicate", "circular")


def pad_from_edges(input: Tensor, pad: Sequence[int], mode: str) -> Tensor:
    """``F.pad`` in ``reflect``, ``replicate`` or ``circular`` mode: ``(left, right)`` pairs from the last dim on.

    PyTorch's rules: 1, 2 or 3 padded dims, on an input with one or two more dims (a batch and channel dim, or a
    channel dim only); ``reflect`` pads smaller than the dim they pad, ``circular`` pads at most the dim. Negative
    pads crop; ``circular`` wraps within what the crop leaves, as PyTorch. Each padded axis is one ``tensor.take``
    of the mirrored, clamped or wrapped source indices.
    """
    pads = [int(p) for p in pad]
    _check_edge_pads(input, pads, mode)
    result = input
    for index in range(len(pads) // 2):
        axis = input.ndim - 1 - index
        size = _static_dims(f"pad(mode={mode!r})", input, [axis])[0]
        before, after = pads[2 * index], pads[2 * index + 1]
        _check_edge_pad_sizes(input, mode, axis, size, before, after)
        result = _take(result, _edge_indices(mode, size, before, after), axis)
    return result


def _check_edge_pads(input: Tensor, pads: list[int], mode: str) -> None:
    if mode not in EDGE_MODES:
        raise located_error(f"pad: unknown mode {mode!r}; use 'constant', 'reflect', 'replicate' or 'circular'")
    if len(pads) % 2:
        raise located_error(f"pad: padding length must be divisible by 2 ((left, right) pairs from the last dim), got {tuple(pads)}")
    dims = len(pads) // 2
    if dims not in (1, 2, 3) or input.ndim not in (dims + 1, dims + 2):
        raise located_error(f"pad(mode={mode!r}) pads the last 1, 2 or 3 dims of an input with 1 or 2 more dims (as PyTorch): "
                            f"{len(pads)} pad values pad {dims} dims, which needs a {dims + 1}-D or {dims + 2}-D input, got {input.type}")


def _check_edge_pad_sizes(input: Tensor, mode: str, axis: int, size: int, before: int, after: int) -> None:
    kept = size - max(-before, 0) - max(-after, 0)
    if mode == "reflect" and max(before, after) >= size:
        raise located_error(f"pad(mode='reflect'): padding ({before}, {after}) of dim {axis} of {input.type} must be less than "
                            f"the dim's size {size} (a reflection repeats no edge and never wraps)")
    if mode == "circular" and max(before, after) > kept:
        raise located_error(f"pad(mode='circular'): padding ({before}, {after}) of dim {axis} of {input.type} wraps around more "
                            f"than once; each pad may be at most the {kept} elements the padding keeps of the dim")
    if size + before + after < 1:
        raise located_error(f"pad(mode={mode!r}): padding ({before}, {after}) leaves dim {axis} of {input.type} empty")


def _edge_indices(mode: str, size: int, before: int, after: int) -> list[int]:
    """The source of each output cell: position ``p`` in ``-before .. size + after`` mirrored without repeating the
    edge, or clamped; ``circular`` wraps within the cells a negative pad keeps (PyTorch crops, then wraps)."""
    positions = range(-before, size + after)
    if mode == "replicate":
        return [min(max(p, 0), size - 1) for p in positions]
    if mode == "reflect":
        return [-p if p < 0 else 2 * (size - 1) - p if p >= size else p for p in positions]
    start, stop = max(-before, 0), size - max(-after, 0)
    return [start + (p - start) % (stop - start) for p in positions]


# Interpolation ------------------------------------------------------------------------------------------------------

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
    (adaptive average pooling, 3-D and 4-D). ``scale = 1 / scale_factor`` when a scale factor is given (and
    ``recompute_scale_factor`` is not set), else ``in / out`` -- which differ for non-integer factors, as in PyTorch.
    Spatial dims must be static; batch and channel dims may be symbolic.
    """
    spatial = input.ndim - 2
    _check_interpolate_mode(input, mode, align_corners, antialias)
    sizes = _static_dims("interpolate", input, range(2, input.ndim))
    outputs, scales = _output_sizes(input, sizes, size, scale_factor, recompute_scale_factor)
    if mode == "area":
        return _area(input, outputs)

    def resize(result: Tensor) -> Tensor:
        for axis in reversed(range(spatial)):  # the last axis first, as PyTorch's kernel nests the axes
            result = _resize_axis(result, 2 + axis, sizes[axis], outputs[axis], scales[axis], mode, bool(align_corners))
        return result

    # a half input interpolates in float32 (weights and sums) and rounds once, as PyTorch's CPU kernel; nearest only gathers
    return in_opmath(resize, input) if mode in LINEAR_MODES or mode == "bicubic" else resize(input)


def _check_interpolate_mode(input: Tensor, mode: str, align_corners: bool | None, antialias: bool) -> None:
    if mode in REFUSED_MODES:
        raise located_error(f"interpolate: mode {mode!r} is not supported in kiln; use 'bilinear', 'nearest', 'nearest-exact' "
                            f"or 'area'")
    if mode not in ("nearest", "nearest-exact", "area", "bicubic", *LINEAR_MODES):
        raise located_error(f"interpolate: unknown mode {mode!r}; one of 'nearest', 'nearest-exact', 'linear', 'bilinear', "
                            f"'bicubic', 'trilinear', 'area'")
    if antialias:
        raise located_error("interpolate: antialias=True is not supported in kiln; pass antialias=False")
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
    if mode == "area" and input.ndim == 5:
        raise located_error(f"interpolate: mode 'area' supports 3-D and 4-D inputs in kiln, got {input.type}")


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
    """PyTorch's ``area`` mode is adaptive average pooling to the output size (1-D as 2-D of height 1)."""
    if input.ndim == 3:
        return adaptive_avg_pool2d(input.unsqueeze(2), (1, outputs[0])).squeeze(2)
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


# Pixel and channel shuffles ------------------------------------------------------------------------------------------


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    """``(*, C r^2, H, W) -> (*, C, H r, W r)``: output ``[c, h r + i, w r + j]`` is input ``[c r^2 + i r + j, h, w]``."""
    r = int(upscale_factor)
    batch, (channels, height, width) = _image_dims("pixel_shuffle", input, r)
    if channels % (r * r):
        raise located_error(f"pixel_shuffle: the channel dim ({channels}) of {input.type} must be divisible by "
                            f"upscale_factor^2 = {r * r}")
    split = input.reshape(batch + (channels // (r * r), r, r, height, width))
    lead = len(batch)
    shuffled = split.permute(*range(lead), lead, lead + 3, lead + 1, lead + 4, lead + 2)
    return shuffled.reshape(batch + (channels // (r * r), height * r, width * r))


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    """``(*, C, H r, W r) -> (*, C r^2, H, W)``, the inverse of ``pixel_shuffle``."""
    r = int(downscale_factor)
    batch, (channels, height, width) = _image_dims("pixel_unshuffle", input, r)
    if height % r or width % r:
        raise located_error(f"pixel_unshuffle: height {height} and width {width} of {input.type} must be divisible by "
                            f"downscale_factor {r}")
    split = input.reshape(batch + (channels, height // r, r, width // r, r))
    lead = len(batch)
    shuffled = split.permute(*range(lead), lead, lead + 2, lead + 4, lead + 1, lead + 3)
    return shuffled.reshape(batch + (channels * r * r, height // r, width // r))


def _image_dims(function: str, input: Tensor, factor: int) -> tuple[tuple[Any, ...], list[int]]:
    """``(leading dims, [C, H, W])`` of a ``(*, C, H, W)`` input, the last three static."""
    if input.ndim < 3:
        raise located_error(f"{function} expects a (*, C, H, W) input of at least 3 dims, got {input.type}")
    if factor < 1:
        raise located_error(f"{function}: the factor must be a positive int, got {factor}")
    return tuple(input.shape[:-3]), _static_dims(function, input, range(input.ndim - 3, input.ndim))


def channel_shuffle(input: Tensor, groups: int) -> Tensor:
    """``(N, C, *) -> (N, C, *)`` with the channels ``(groups, C / groups)`` transposed (ShuffleNet)."""
    if input.ndim < 3:
        raise located_error(f"channel_shuffle expects an (N, C, *) input of at least 3 dims, got {input.type}")
    channels = _static_dims("channel_shuffle", input, [1])[0]
    if groups < 1 or channels % groups:
        raise located_error(f"channel_shuffle: the {channels} channels of {input.type} must be divisible by groups={groups}")
    rest = tuple(input.shape[2:])
    split = input.reshape((input.shape[0], groups, channels // groups) + rest)
    return split.transpose(1, 2).reshape(input.shape)


# Sliding windows ------------------------------------------------------------------------------------------------------


def unfold(input: Tensor, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1) -> Tensor:
    """im2col: ``(N, C, H, W) -> (N, C KH KW, L)``, column ``l`` the window at output position ``l`` (row-major over
    ``(OH, OW)``), its rows ordered ``(c, i, j)`` as PyTorch. A ``(C, H, W)`` input gives ``(C KH KW, L)``.

    One gather: the zero-padded image, flattened to ``(N, C, Hp Wp)``, read at every window's cells in ``(i, j, l)``
    order, then viewed as ``(N, C KH KW, L)``.
    """
    if input.ndim == 3:
        return unfold(input.unsqueeze(0), kernel_size, dilation, padding, stride).squeeze(0)
    if input.ndim != 4:
        raise located_error(f"unfold expects an (N, C, H, W) or (C, H, W) input, got {input.type}")
    geometry = _window_geometry("unfold", kernel_size, dilation, padding, stride)
    height, width = _static_dims("unfold", input, (2, 3))
    blocks = _block_counts("unfold", (height, width), geometry)
    padding = geometry[2]
    padded = pad(input, (padding[1], padding[1], padding[0], padding[0])) if any(padding) else input
    flat = padded.reshape(input.shape[0], input.shape[1], -1)
    columns = _take(flat, _window_cells(geometry, blocks, width + 2 * padding[1]), axis=2)
    return columns.reshape(input.shape[0], -1, blocks[0] * blocks[1])


def fold(input: Tensor, output_size: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1) -> Tensor:
    """col2im, the adjoint of ``unfold``: ``(N, C KH KW, L) -> (N, C, H, W)``, overlapping windows summed.
    A ``(C KH KW, L)`` input gives ``(C, H, W)``.

    One scatter-add, the transpose of ``unfold``'s gather: every column entry is added into its cell of the padded
    image, flattened to ``(N, C, Hp Wp)``; then the padding is cut off.
    """
    if input.ndim == 2:
        return fold(input.unsqueeze(0), output_size, kernel_size, dilation, padding, stride).squeeze(0)
    if input.ndim != 3:
        raise located_error(f"fold expects an (N, C * KH * KW, L) or (C * KH * KW, L) input, got {input.type}")
    geometry = _window_geometry("fold", kernel_size, dilation, padding, stride)
    (height, width), padding = _pair(output_size), geometry[2]
    blocks = _block_counts("fold", (height, width), geometry)
    channels = _fold_channels(input, blocks, (height, width), geometry)
    padded = (height + 2 * padding[0], width + 2 * padding[1])
    columns = input.reshape(input.shape[0], channels, -1)
    image = apply("tensor.scatter_add", columns, np.asarray(_window_cells(geometry, blocks, padded[1]), np.int64), axis=2,
                  shape=(input.shape[0], channels, padded[0] * padded[1]))
    image = image.reshape(input.shape[0], channels, *padded)
    for axis, size, cut in ((2, height, padding[0]), (3, width, padding[1])):
        if cut:
            image = apply("tensor.slice", image, axis=axis, start=cut, stop=cut + size, step=1)
    return image


def _window_cells(geometry, blocks: tuple[int, int], padded_width: int) -> np.ndarray:
    """The flat index in the padded image of window element ``(i, j)`` of window ``(oh, ow)``, in ``(i, j, oh, ow)``
    order: row ``i dilation + oh stride``, column ``j dilation + ow stride``."""
    kernel, dilation, _, stride = geometry
    rows = np.arange(kernel[0])[:, None, None, None] * dilation[0] + np.arange(blocks[0])[None, None, :, None] * stride[0]
    columns = np.arange(kernel[1])[None, :, None, None] * dilation[1] + np.arange(blocks[1])[None, None, None, :] * stride[1]
    return (rows * padded_width + columns).ravel()


def _fold_channels(input: Tensor, blocks: tuple[int, int], size: tuple[int, int], geometry) -> int:
    """``C`` of an ``(N, C KH KW, L)`` input, after PyTorch's checks of ``C KH KW`` and ``L``."""
    kernel, dilation, padding, stride = geometry
    rows, length = _static_dims("fold", input, (1, 2))
    if rows % (kernel[0] * kernel[1]):
        raise located_error(f"fold: dim 1 of {input.type} ({rows}) must be divisible by the kernel's size "
                            f"{kernel[0]} * {kernel[1]}")
    if length != blocks[0] * blocks[1]:
        raise located_error(f"fold: output_size={size}, kernel_size={kernel}, dilation={dilation}, padding={padding}, "
                            f"stride={stride} give {blocks[0]} * {blocks[1]} = {blocks[0] * blocks[1]} sliding blocks, "
                            f"but dim 2 of {input.type} is {length}")
    return rows // (kernel[0] * kernel[1])


def _window_geometry(function: str, kernel_size: Any, dilation: Any, padding: Any, stride: Any):
    """``(kernel, dilation, padding, stride)`` as pairs, each checked as PyTorch does."""
    kernel, dilation, padding, stride = (_pair(v) for v in (kernel_size, dilation, padding, stride))
    for name, value, least in (("kernel_size", kernel, 1), ("dilation", dilation, 1), ("padding", padding, 0), ("stride", stride, 1)):
        if min(value) < least:
            raise located_error(f"{function}: {name} must be {'non-negative' if least == 0 else 'positive'}, got {value}")
    return kernel, dilation, padding, stride


def _block_counts(function: str, size: Sequence[int], geometry) -> tuple[int, int]:
    """``(OH, OW)``: ``floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1`` windows on each axis."""
    kernel, dilation, padding, stride = geometry
    blocks = tuple((size[a] + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1 for a in range(2))
    if min(blocks) < 1:
        raise located_error(f"{function}: spatial size {tuple(size)} with kernel_size={kernel}, dilation={dilation}, "
                            f"padding={padding} fits {blocks} sliding blocks; each must be at least 1")
    return blocks  # type: ignore[return-value]


# Gating and activations -----------------------------------------------------------------------------------------------


def glu(input: Tensor, dim: int = -1) -> Tensor:
    """Gated linear unit: ``a sigmoid(b)`` with ``a, b`` the two halves of ``input`` along ``dim``."""
    axis = normalize_axis(dim, input.ndim)
    size = _static_dims("glu", input, [axis])[0]
    if size % 2:
        raise located_error(f"glu: the halved dim {dim} of {input.type} must have an even size, got {size}")
    half = size // 2
    first = apply("tensor.slice", input, axis=axis, start=0, stop=half, step=1)
    second = apply("tensor.slice", input, axis=axis, start=half, stop=size, step=1)
    return first * apply("tensor.sigmoid", second)


@honors_inplace
def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """``relu6(x + 3) / 6``: 0 up to -3, 1 from 3 on; slope 0 at both kinks, as PyTorch."""
    return apply("tensor.where", input <= -3.0, 0.0, apply("tensor.where", input >= 3.0, 1.0, (input + 3.0) / 6.0))


# Channel dropout -------------------------------------------------------------------------------------------------------


@honors_inplace
def dropout1d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, L)`` (or ``(C, L)``) with probability ``p``, the rest scaled by ``1 / (1 - p)``."""
    if input.ndim not in (2, 3):
        raise located_error(f"dropout1d expects an (N, C, L) or (C, L) input, got {input.type}")
    if input.ndim == 2:
        return dropout1d(input.unsqueeze(0), p, training).squeeze(0)
    return _channel_dropout(input, p, training)


@honors_inplace
def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of ``(N, C, H, W)`` with probability ``p``, the rest scaled by ``1 / (1 - p)``. As PyTorch,
    a 3-D input is read as ``(N, C, L)`` (channel-wise 1-D dropout), and any other input of 2 dims or more is dropped by
    channels ``(N, C, ...)`` with PyTorch's deprecation warning: a 2-D ``(N, C)`` one element by element, as ``dropout``
    (pytorch/examples' mnist_rnn applies ``nn.Dropout2d`` to an LSTM's last output)."""
    if input.ndim < 2:
        raise located_error(f"dropout2d needs a channel dim: an (N, C, H, W) input (or (N, C, L)), got shape {tuple(input.shape)}")
    if input.ndim not in (3, 4):
        _warn_at_user_line(f"dropout2d: received a {input.ndim}-D input of shape {tuple(input.shape)}; as PyTorch, its dim 1 "
                           "is read as the channels (a 2-D input drops each element alone). Use dropout for that, or give "
                           "an (N, C, H, W) input")
    return _channel_dropout(input, p, training)


_WARNED: dict[Any, bool] = {}
"""The warnings registry of ``_warn_at_user_line``: each user line warns once, as ``warnings.warn`` does."""


def _warn_at_user_line(message: str) -> None:
    """A ``UserWarning`` attributed to the user's line that called into kiln (``nn.Dropout2d(p)(x)``), not to kiln's."""
    location = user_location()
    if location is None:
        warnings.warn(message, UserWarning, stacklevel=3)
    else:
        warnings.warn_explicit(message, UserWarning, location.filename, location.line, registry=_WARNED)


def _channel_dropout(input: Tensor, p: float, training: bool) -> Tensor:
    """One ``nn.dropout`` draw per ``(N, C)`` on ones shaped ``(N, C, 1, ...)``, broadcast over the spatial dims; the
    seed comes from the traced graph as for ``F.dropout``. Nothing is traced unless training with ``p > 0``."""
    if not 0 <= p < 1:
        raise located_error(f"channel dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return input
    shape = tuple(input.shape[:2]) + (1,) * (input.ndim - 2)
    ones = apply("tensor.constant", value=np.ones((1,) * input.ndim, DType.of(input.dtype).numpy))  # input may be an array
    return input * dropout(apply("tensor.broadcast_to", ones, shape=shape), p)


# Bilinear -------------------------------------------------------------------------------------------------------------


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y[..., o] = sum_ij x1[..., i] W[o, i, j] x2[..., j] + b[o]`` with weight ``(out, in1, in2)``, as PyTorch.

    Traced as one matmul, ``x2 W^T`` over ``W`` viewed ``(out in1, in2)``, then a product with ``x1`` summed over ``i``.
    """
    out, in1, in2 = _bilinear_shapes(input1, input2, weight)
    projected = input2 @ weight.reshape(out * in1, in2).T
    projected = projected.reshape(tuple(input2.shape[:-1]) + (out, in1))
    # the products' sum in float32 for half inputs, rounded once (torch's second bmm accumulates in float32)
    output = in_opmath(lambda p, x1: (p * x1.unsqueeze(-2)).sum(-1), projected, input1)
    return output if bias is None else output + bias


def _bilinear_shapes(input1: Tensor, input2: Tensor, weight: Tensor) -> tuple[int, int, int]:
    if weight.ndim != 3:
        raise located_error(f"bilinear expects a weight of shape (out, in1, in2), got {weight.type}")
    out, in1, in2 = _static_dims("bilinear", weight, (0, 1, 2))
    if input1.shape[-1] != in1 or input2.shape[-1] != in2 or tuple(input1.shape[:-1]) != tuple(input2.shape[:-1]):
        raise located_error(f"bilinear: inputs {input1.type} and {input2.type} must share their leading dims and end in "
                            f"in1={in1} and in2={in2} features (weight {weight.type})")
    return out, in1, in2


__all__ = [
    "bilinear", "channel_shuffle", "dropout1d", "dropout2d", "fold", "glu", "hardsigmoid", "interpolate", "pixel_shuffle",
    "pixel_unshuffle", "unfold",
]
