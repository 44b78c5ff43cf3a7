"""``F.max_pool1d``, ``F.avg_pool1d``, ``F.adaptive_avg_pool1d`` and ``F.adaptive_max_pool1d``, with PyTorch's names,
argument orders and defaults (the layers are in ``frontend/layers_pool1d.py``).

Nothing here adds an op: the 1-D pools view ``(N, C, L)`` as the unit-height image ``(N, C, 1, L)`` and pool it with the
2-D ops, as ``F.conv1d`` does. PyTorch's extras the 2-D ops lack are built around them: ``ceil_mode``'s last, partial
window pads the right end (with -inf for max, with zeros for the average, whose divisor a constant then corrects);
``count_include_pad=False`` is that same divisor correction; a dilated max pool and an uneven adaptive max gather each
window's elements (``tensor.take``) and take the first largest (``Tensor.max(dim)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.frontend.functional_conv import adaptive_avg_pool2d, adaptive_max_pool2d
from kiln.frontend.functional_nn import avg_pool2d, max_pool2d, pad
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error


# 1-D pooling geometry ---------------------------------------------------------------


def _one(function: str, name: str, value: Any) -> int:
    """PyTorch's 1-d size arguments: ``3`` and ``(3,)`` both mean 3."""
    values = (value,) if isinstance(value, (int, np.integer)) else tuple(value) if isinstance(value, (tuple, list)) else None
    if values is None or len(values) != 1 or not isinstance(values[0], (int, np.integer)) or isinstance(values[0], bool):
        raise located_error(f"{function}: {name} must be an int or a 1-tuple of ints, got {value!r}")
    return int(values[0])


def _batched(function: str, input: Tensor) -> Tensor:
    """``input`` as ``(N, C, L)``: PyTorch's 1-D pools also take an unbatched ``(C, L)``. ``L`` must be static."""
    if input.ndim not in (2, 3):
        raise located_error(f"{function} expects an (N, C, L) or unbatched (C, L) input, got {input.type}")
    if isinstance(input.shape[-1], str):
        raise located_error(f"{function} needs a static length L, got {input.type}")
    if not input.dtype.is_float:
        raise located_error(f"{function} needs a floating-point input, got {input.type}; cast it first (x.float())")
    return input if input.ndim == 3 else input.unsqueeze(0)


def _like_input(output: Tensor, input: Tensor) -> Tensor:
    """Drop the batch dim ``_batched`` added to an unbatched input."""
    return output if input.ndim == 3 else output.squeeze(0)


@dataclass(frozen=True)
class _Windows:
    """PyTorch's 1-D pooling windows: window ``o`` covers positions ``o stride + j dilation`` (``j < kernel``) of the
    input padded by ``padding`` on both sides; ``count`` windows (``ceil_mode`` keeps a last, partial one)."""

    length: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    count: int

    @property
    def overhang(self) -> int:
        """How far ``ceil_mode``'s last window reaches past the right padding: elements to pad there too."""
        reach = (self.count - 1) * self.stride + self.dilation * (self.kernel - 1) + 1
        return max(0, reach - (self.length + 2 * self.padding))

    def indices(self) -> np.ndarray:
        """``(count, kernel)``: each window's positions in the input padded by ``padding`` (and ``overhang``)."""
        return np.arange(self.count)[:, None] * self.stride + np.arange(self.kernel)[None, :] * self.dilation

    def divisors(self, count_include_pad: bool) -> np.ndarray:
        """PyTorch's ``avg_pool`` divisor per window: its span clipped to the padded input, or, without
        ``count_include_pad``, to the input itself."""
        start = np.arange(self.count) * self.stride - self.padding
        stop = np.minimum(start + self.kernel, self.length + self.padding)
        if count_include_pad:
            return stop - start
        return np.minimum(stop, self.length) - np.maximum(start, 0)


def _windows(function: str, input: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool) -> _Windows:
    """The windows of ``input``'s last axis, checked as PyTorch checks them."""
    kernel = _one(function, "kernel_size", kernel_size)
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and not stride) else _one(function, "stride", stride)
    padding, dilation = _one(function, "padding", padding), _one(function, "dilation", dilation)
    if kernel <= 0 or stride <= 0 or dilation <= 0 or padding < 0:
        raise located_error(f"{function}: kernel_size ({kernel}), stride ({stride}) and dilation ({dilation}) must be positive "
                            f"and padding ({padding}) non-negative")
    if padding > kernel // 2:
        raise located_error(f"{function}: padding {padding} must be at most half of kernel_size {kernel} (as PyTorch)")
    length = int(input.shape[-1])
    count = _pooled_length(length, kernel, stride, padding, dilation, ceil_mode)
    if count <= 0:
        raise located_error(f"{function}: a window of {kernel} (dilation {dilation}) does not fit the length {length} of "
                            f"{input.type} padded by {padding}")
    return _Windows(length, kernel, stride, padding, dilation, count)


def _pooled_length(length: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's ``pooling_output_shape``: with ``ceil_mode`` a last window may start past the end, as long as it
    starts inside the input or its left padding."""
    span = length + 2 * padding - dilation * (kernel - 1) - 1
    count = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (count - 1) * stride >= length + padding:
        count -= 1
    return count


def _max_over_windows(input: Tensor, indices: np.ndarray) -> Tensor:
    """``(N, C, L) -> (N, C, windows)``: the largest of each row of ``indices`` (positions on the last axis); the
    first largest takes the gradient, as PyTorch's pools route it."""
    count, kernel = indices.shape
    gathered = apply("tensor.take", input, apply("tensor.constant", value=indices.reshape(-1).astype(np.int64)), axis=2)
    return gathered.reshape(input.shape[0], input.shape[1], count, kernel).max(-1)[0]


# 1-D pooling --------------------------------------------------------------------------


def max_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    """``(N, C, L) -> (N, C, L_out)``, the largest element of each window (padding counts as -inf), as PyTorch.

    Without dilation this is ``tensor.max_pool2d`` over ``(N, C, 1, L)``; ``ceil_mode``'s partial last window pads
    the right end with -inf first. A dilated window gathers its elements and takes their max."""
    if return_indices:
        raise located_error("max_pool1d: return_indices=True is not supported; take indices with argmax")
    batched = _batched("max_pool1d", input)
    windows = _windows("max_pool1d", input, kernel_size, stride, padding, dilation, ceil_mode)
    if windows.dilation != 1:
        padded = pad(batched, (windows.padding, windows.padding + windows.overhang), value=-math.inf)
        return _like_input(_max_over_windows(padded, windows.indices()), input)
    image = batched.unsqueeze(2)
    if windows.overhang:
        image = pad(image, (0, windows.overhang), value=-math.inf)
    pooled = max_pool2d(image, (1, windows.kernel), (1, windows.stride), (0, windows.padding))
    return _like_input(pooled.squeeze(2), input)


def avg_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """``(N, C, L) -> (N, C, L_out)``, the mean of each window, with PyTorch's divisor: the kernel size, less what
    ``ceil_mode``'s last window reaches past the padding, and less the padding without ``count_include_pad``.

    ``tensor.avg_pool2d`` over ``(N, C, 1, L)`` (zero-padded on the right for ``ceil_mode``) divides every window by
    the kernel size; where PyTorch's divisor differs, a constant ``kernel / divisor`` per window rescales it."""
    image = _batched("avg_pool1d", input).unsqueeze(2)
    windows = _windows("avg_pool1d", input, kernel_size, stride, padding, 1, ceil_mode)
    if windows.overhang:
        image = pad(image, (0, windows.overhang))
    pooled = avg_pool2d(image, (1, windows.kernel), (1, windows.stride), (0, windows.padding)).squeeze(2)
    divisors = windows.divisors(count_include_pad)
    if np.any(divisors != windows.kernel):
        pooled = pooled * apply("tensor.constant", value=(windows.kernel / divisors).astype(input.dtype.numpy))
    return _like_input(pooled, input)


def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> Tensor:
    """``(N, C, L) -> (N, C, output_size)``: cell ``i`` averages ``floor(i L / O) .. ceil((i + 1) L / O)``, as PyTorch;
    ``F.adaptive_avg_pool2d`` over ``(N, C, 1, L)``."""
    size = _one("adaptive_avg_pool1d", "output_size", output_size)
    if size <= 0:
        raise located_error(f"adaptive_avg_pool1d: output_size must be positive, got {output_size!r}")
    pooled = adaptive_avg_pool2d(_batched("adaptive_avg_pool1d", input).unsqueeze(2), (1, size))
    return _like_input(pooled.squeeze(2), input)


def adaptive_max_pool1d(input: Tensor, output_size: Any, return_indices: bool = False) -> Tensor:
    """``(N, C, L) -> (N, C, output_size)``: cell ``i`` is the max of ``floor(i L / O) .. ceil((i + 1) L / O)``, as
    PyTorch, for any ``output_size``. Windows that tile ``L`` are ``max_pool2d``; uneven ones are gathered, the shorter
    ones padded by repeating their last element (which changes neither the max nor where its gradient goes)."""
    if return_indices:
        raise located_error("adaptive_max_pool1d: return_indices=True is not supported; take indices with argmax")
    size = _one("adaptive_max_pool1d", "output_size", output_size)
    batched = _batched("adaptive_max_pool1d", input)
    if size <= 0:
        raise located_error(f"adaptive_max_pool1d: output_size must be positive, got {output_size!r}")
    length = int(batched.shape[2])
    if length % size == 0:
        return _like_input(adaptive_max_pool2d(batched.unsqueeze(2), (1, size)).squeeze(2), input)
    return _like_input(_max_over_windows(batched, _adaptive_indices(length, size)), input)


def _adaptive_indices(length: int, size: int) -> np.ndarray:
    """``(size, widest window)``: the positions of PyTorch's adaptive windows, each row padded with its last one."""
    starts = np.arange(size) * length // size
    stops = -(-(np.arange(size) + 1) * length // size)
    width = int((stops - starts).max())
    return np.minimum(starts[:, None] + np.arange(width)[None, :], stops[:, None] - 1)


__all__ = ["adaptive_avg_pool1d", "adaptive_max_pool1d", "avg_pool1d", "max_pool1d"]
