"""``F.max_pool1d``, ``F.avg_pool1d``, ``F.adaptive_avg_pool1d`` and ``F.adaptive_max_pool1d``, with PyTorch's names,
argument orders and defaults (the layers are in ``frontend/layers_pool1d.py``).

Nothing here adds an op: the 1-D pools view ``(N, C, L)`` as the unit-height image ``(N, C, 1, L)`` and pool it as
``F.max_pool2d`` and ``F.avg_pool2d`` do (``frontend/functional_nn.py`` holds the windows' geometry: ``ceil_mode``,
``count_include_pad``, dilation), as ``F.conv1d`` convolves. An uneven adaptive max gathers each window's elements
(``tensor.take``) and takes the first largest (``Tensor.max(dim)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.functional_conv import adaptive_avg_pool2d, adaptive_max_pool2d, single_size
from kiln.frontend.functional_nn import avg_pool_nchw, batched_pool_input, like_pool_input, max_pool_nchw, window_max
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error


# 1-D pooling arguments --------------------------------------------------------------


def _sizes(function: str, kernel_size: Any, stride: Any, padding: Any, dilation: Any = 1) -> tuple[tuple[int, int], ...]:
    """``(kernel, stride, padding, dilation)`` as the unit-height image's ``(1, x)`` pairs (``(0, x)`` for the padding);
    an omitted (None or empty) stride is the kernel, as PyTorch's."""
    kernel = single_size(function, "kernel_size", kernel_size)
    omitted = stride is None or (isinstance(stride, (tuple, list)) and not stride)
    stride = kernel if omitted else single_size(function, "stride", stride)
    padding, dilation = single_size(function, "padding", padding), single_size(function, "dilation", dilation)
    return (1, kernel), (1, stride), (0, padding), (1, dilation)


# 1-D pooling --------------------------------------------------------------------------


def max_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor:
    """``(N, C, L) -> (N, C, L_out)``, the largest element of each window (padding counts as -inf), as PyTorch:
    ``F.max_pool2d``'s windows over ``(N, C, 1, L)``; with ``return_indices``, also each winner's position in ``L``
    (its index in the unit-height plane)."""
    image = batched_pool_input("max_pool1d", input, 1).unsqueeze(2)
    pooled = max_pool_nchw("max_pool1d", image, *_sizes("max_pool1d", kernel_size, stride, padding, dilation), ceil_mode, return_indices)
    if return_indices:
        values, indices = pooled
        return like_pool_input(values.squeeze(2), input, 1), like_pool_input(indices.squeeze(2), input, 1)
    return like_pool_input(pooled.squeeze(2), input, 1)


def avg_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """``(N, C, L) -> (N, C, L_out)``, the mean of each window, with PyTorch's divisor: the kernel size, less what
    ``ceil_mode``'s last window reaches past the padding, and less the padding without ``count_include_pad``:
    ``F.avg_pool2d``'s windows over ``(N, C, 1, L)``."""
    image = batched_pool_input("avg_pool1d", input, 1).unsqueeze(2)
    kernel, stride, padding, _ = _sizes("avg_pool1d", kernel_size, stride, padding)
    pooled = avg_pool_nchw("avg_pool1d", image, kernel, stride, padding, ceil_mode, count_include_pad, None)
    return like_pool_input(pooled.squeeze(2), input, 1)


def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> Tensor:
    """``(N, C, L) -> (N, C, output_size)``: cell ``i`` averages ``floor(i L / O) .. ceil((i + 1) L / O)``, as PyTorch;
    ``F.adaptive_avg_pool2d`` over ``(N, C, 1, L)``."""
    size = single_size("adaptive_avg_pool1d", "output_size", output_size)
    if size <= 0:
        raise located_error(f"adaptive_avg_pool1d: output_size must be positive, got {output_size!r}")
    pooled = adaptive_avg_pool2d(batched_pool_input("adaptive_avg_pool1d", input, 1).unsqueeze(2), (1, size))
    return like_pool_input(pooled.squeeze(2), input, 1)


def adaptive_max_pool1d(input: Tensor, output_size: Any, return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``(N, C, L) -> (N, C, output_size)``: cell ``i`` is the max of ``floor(i L / O) .. ceil((i + 1) L / O)``, as
    PyTorch, for any ``output_size``. Windows that tile ``L`` are ``max_pool2d``; uneven ones are gathered, the shorter
    ones padded by repeating their last element (which changes neither the max nor where its gradient goes).
    ``return_indices`` gives PyTorch's ``(values, indices)`` (``F.adaptive_max_pool1d_with_indices``)."""
    if return_indices:
        from kiln.frontend.functional_extra import adaptive_max_pool1d_with_indices

        return adaptive_max_pool1d_with_indices(input, output_size)
    size = single_size("adaptive_max_pool1d", "output_size", output_size)
    batched = batched_pool_input("adaptive_max_pool1d", input, 1)
    if size <= 0:
        raise located_error(f"adaptive_max_pool1d: output_size must be positive, got {output_size!r}")
    length = int(batched.shape[2])
    if length % size == 0:
        return like_pool_input(adaptive_max_pool2d(batched.unsqueeze(2), (1, size)).squeeze(2), input, 1)
    return like_pool_input(_max_over_windows(batched, _adaptive_indices(length, size)), input, 1)


def _max_over_windows(input: Tensor, indices: np.ndarray) -> Tensor:
    """``(N, C, L) -> (N, C, windows)``: the largest of each row of ``indices`` (positions on the last axis); PyTorch's
    pick (the last NaN, else the first largest) takes the gradient (``functional_nn.window_max``)."""
    count, kernel = indices.shape
    gathered = apply("tensor.take", input, apply("tensor.constant", value=indices.reshape(-1).astype(np.int64)), axis=2)
    return window_max(gathered.reshape(input.shape[0], input.shape[1], count, kernel))[0]


def _adaptive_indices(length: int, size: int) -> np.ndarray:
    """``(size, widest window)``: the positions of PyTorch's adaptive windows, each row padded with its last one."""
    starts = np.arange(size) * length // size
    stops = -(-(np.arange(size) + 1) * length // size)
    width = int((stops - starts).max())
    return np.minimum(starts[:, None] + np.arange(width)[None, :], stops[:, None] - 1)


__all__ = ["adaptive_avg_pool1d", "adaptive_max_pool1d", "avg_pool1d", "max_pool1d"]
