"""Spatial functions with PyTorch's names and layouts: the edge modes of ``F.pad``, ``F.interpolate``, ``F.pixel_shuffle``,
``F.unfold``/``F.fold``, ``F.glu``, ``F.hardsigmoid``, channel dropout and ``F.bilinear``.

Re-exported by ``frontend/functional.py``. Nothing here is a new op: each function is a few existing primitives, so
every backend, the autodiff rules and ONNX export serve it unchanged. The edge pads live in ``functional_edge_pad.py``
and ``F.interpolate`` in ``functional_interpolate.py``; this file re-exports them.

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

from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.types import DType, normalize_axis
from kiln.frontend.functional_half import in_opmath
from kiln.frontend.functional_nn import _pair, dropout, pad
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.warn_once import DROPOUT2D_OF_3D, warn_at_user_line
from kiln.frontend.tensor_inplace import honors_inplace
from kiln.frontend.functional_edge_pad import _static_dims, _take
from kiln.frontend.functional_edge_pad import pad_from_edges  # noqa: F401  (re-exported: F.pad imports it from here)
from kiln.frontend.functional_interpolate import interpolate


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
    if input.ndim == 0:
        raise located_error("glu does not support scalars because halving size must be even")  # torch's words
    axis = normalize_axis(dim, input.ndim)
    size = _static_dims("glu", input, [axis])[0]
    if size % 2:
        raise located_error(f"Halving dimension must be even, but dimension {axis} is size {size}")
    half = size // 2
    first = apply("tensor.slice", input, axis=axis, start=0, stop=half, step=1)
    second = apply("tensor.slice", input, axis=axis, start=half, stop=size, step=1)
    return first * apply("tensor.sigmoid", second)


@honors_inplace
def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """``relu6(x + 3) / 6``: 0 up to -3, 1 from 3 on; slope 0 at both kinks, as PyTorch (a half input in float32,
    rounded once, as torch's kernel)."""
    return in_opmath(lambda x: apply("tensor.where", x <= -3.0, 0.0, apply("tensor.where", x >= 3.0, 1.0, (x + 3.0) / 6.0)),
                     input)


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
    if input.ndim == 3:
        warn_at_user_line(DROPOUT2D_OF_3D)
    if input.ndim not in (3, 4):
        warn_at_user_line(f"dropout2d: received a {input.ndim}-D input of shape {tuple(input.shape)}; as PyTorch, its dim 1 "
                           "is read as the channels (a 2-D input drops each element alone). Use dropout for that, or give "
                           "an (N, C, H, W) input")
    return _channel_dropout(input, p, training)


def _channel_dropout(input: Tensor, p: float, training: bool) -> Tensor:
    """One ``nn.dropout`` draw per ``(N, C)`` on ones shaped ``(N, C, 1, ...)``, broadcast over the spatial dims; the
    seed comes from the traced graph as for ``F.dropout``. Nothing is traced unless training with ``p > 0``; ``p = 1``
    zeroes everything, as PyTorch's ``input * 0`` (``F.dropout``'s; a NaN stays NaN, the gradient is 0)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
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
