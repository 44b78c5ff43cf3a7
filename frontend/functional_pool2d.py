"""PyTorch's 2-D pools (``F.max_pool2d``, ``F.avg_pool2d``) and the window geometry the 1-D and 3-D pools share.

Re-exported by ``frontend/functional_nn.py`` (so ``F.max_pool2d``). PyTorch's 2-D pools lower to the two ops
``tensor.max_pool2d`` and ``tensor.avg_pool2d`` (symmetric padding at most half the kernel, -inf for max; the average
divides by the kernel's size). A plain call stays that one op; PyTorch's other options are built around it:
``ceil_mode``'s partial last windows pad the bottom and right ends too (-inf for max, zeros for the average); where
the average's divisor differs from the kernel's size (``ceil_mode``'s clipped windows, ``count_include_pad=False``,
``divisor_override``) a constant per window rescales it; a dilated max pool, and one returning indices, gathers each
window's elements (``tensor.take``) and takes their first largest. The 1-D pools (``frontend/functional_pool1d.py``)
are ``max_pool_nchw``/``avg_pool_nchw`` over a unit-height image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.functional_movement import pad


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``(N, C, H, W)`` or unbatched ``(C, H, W)``: the largest element of each window (padding counts as -inf), as
    PyTorch; the first largest (row-major) takes the gradient. ``return_indices=True`` also gives each winner's flat
    index into its input plane (``h W + w``), PyTorch's ``(output, indices)``."""
    image = batched_pool_input("max_pool2d", input)
    kernel, stride, padding = _pool_sizes("max_pool2d", kernel_size, stride, padding)
    dilation = _pool_pair("max_pool2d", "dilation", dilation)
    pooled = max_pool_nchw("max_pool2d", image, kernel, stride, padding, dilation, ceil_mode, return_indices)
    return tuple(like_pool_input(t, input) for t in pooled) if return_indices else like_pool_input(pooled, input)


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """``(N, C, H, W)`` or unbatched ``(C, H, W)``: the mean of each window with PyTorch's divisor (the window clipped
    to the padded input, or to the input itself without ``count_include_pad``; ``divisor_override`` if given)."""
    image = batched_pool_input("avg_pool2d", input)
    kernel, stride, padding = _pool_sizes("avg_pool2d", kernel_size, stride, padding)
    pooled = avg_pool_nchw("avg_pool2d", image, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return like_pool_input(pooled, input)


def max_pool_nchw(function: str, image: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                  dilation: tuple[int, int], ceil_mode: bool, return_indices: bool) -> Tensor | tuple[Tensor, Tensor]:
    """``F.max_pool2d`` on a checked ``(N, C, H, W)`` image with its sizes as pairs; errors name ``function``."""
    rows, cols = _pool_axes(function, image, kernel, stride, padding, dilation, ceil_mode)
    if return_indices or dilation != (1, 1):
        return _gathered_max(image, (rows, cols), return_indices)
    if rows.overhang or cols.overhang:
        image = pad(image, (0, cols.overhang, 0, rows.overhang), value=-np.inf)
    return apply("tensor.max_pool2d", image, kernel_size=kernel, stride=stride, padding=padding)


def checked_divisor_override(function: str, divisor_override: Any) -> None:
    """PyTorch's check of an average pool's ``divisor_override``: a nonzero int, or None."""
    if divisor_override is not None and (not isinstance(divisor_override, (int, np.integer)) or isinstance(divisor_override, bool)
                                         or divisor_override == 0):
        raise located_error(f"{function}: divisor_override must be a nonzero int or None, got {divisor_override!r}")


def avg_pool_nchw(function: str, image: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                  ceil_mode: bool, count_include_pad: bool, divisor_override: int | None) -> Tensor:
    """``F.avg_pool2d`` on a checked ``(N, C, H, W)`` image with its sizes as pairs: ``tensor.avg_pool2d`` divides each
    window by ``KH KW``, then, where PyTorch's divisor differs, a constant ``KH KW / divisor`` rescales it."""
    checked_divisor_override(function, divisor_override)
    rows, cols = _pool_axes(function, image, kernel, stride, padding, (1, 1), ceil_mode)
    if rows.overhang or cols.overhang:
        image = pad(image, (0, cols.overhang, 0, rows.overhang))
    pooled = apply("tensor.avg_pool2d", image, kernel_size=kernel, stride=stride, padding=padding)
    if divisor_override is not None:
        divisors = np.asarray(int(divisor_override))
    else:
        divisors = np.outer(rows.divisors(count_include_pad), cols.divisors(count_include_pad))
    scales = kernel[0] * kernel[1] / divisors
    if np.any(scales != 1):
        pooled = pooled * apply("tensor.constant", value=np.asarray(scales, image.dtype.numpy))
    return pooled


POOL_LAYOUTS = {1: ("(N, C, L)", "(C, L)", "a static length L"), 2: ("(N, C, H, W)", "(C, H, W)", "static H and W")}
"""Per number of spatial dims: the batched and unbatched layouts a pool takes, and what must be static."""


def batched_pool_input(function: str, input: Tensor, spatial: int = 2) -> Tensor:
    """``input`` as ``(N, C, *spatial)``: PyTorch's pools also take an unbatched ``(C, *spatial)``. The spatial dims
    must be static and the input floating-point."""
    batched, unbatched, static = POOL_LAYOUTS[spatial]
    if input.ndim not in (spatial + 1, spatial + 2):
        raise located_error(f"{function} expects an {batched} or unbatched {unbatched} input, got {input.type}")
    if any(isinstance(size, str) for size in input.shape[-spatial:]):
        raise located_error(f"{function} needs {static}, got {input.type}")
    if not input.dtype.is_float:
        raise located_error(f"{function} needs a floating-point input, got {input.type}; cast it first (x.float())")
    return input if input.ndim == spatial + 2 else input.unsqueeze(0)


def like_pool_input(output: Tensor, input: Tensor, spatial: int = 2) -> Tensor:
    """Drop the batch dim ``batched_pool_input`` added to an unbatched input."""
    return output if input.ndim == spatial + 2 else output.squeeze(0)


def _pool_sizes(function: str, kernel_size: Any, stride: Any, padding: Any) -> tuple[tuple[int, int], ...]:
    """``(kernel, stride, padding)`` as pairs; an omitted (None or empty) stride is the kernel, as PyTorch's."""
    kernel = _pool_pair(function, "kernel_size", kernel_size)
    omitted = stride is None or (isinstance(stride, (tuple, list)) and not stride)
    return kernel, kernel if omitted else _pool_pair(function, "stride", stride), _pool_pair(function, "padding", padding)


def _pool_pair(function: str, name: str, value: Any) -> tuple[int, int]:
    """PyTorch's 2-d pool sizes: an int, or a tuple of one or two ints, as ``(height, width)``."""
    values = (value,) if isinstance(value, (int, np.integer)) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(values) not in (1, 2) or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
        raise located_error(f"{function}: {name} must be an int or a tuple of one or two ints, got {value!r}")
    return int(values[0]), int(values[-1])


@dataclass(frozen=True)
class _PoolAxis:
    """One spatial axis of PyTorch's pooling windows: window ``o`` reads positions ``o stride - padding + j dilation``
    (``j < kernel``) of an axis of ``length``, those outside ``[0, length)`` in the padding; ``count`` windows
    (``ceil_mode`` keeps a last, partial one)."""

    length: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    count: int

    @property
    def overhang(self) -> int:
        """How far ``ceil_mode``'s last window reaches past the end padding: elements to pad there too."""
        reach = (self.count - 1) * self.stride + self.dilation * (self.kernel - 1) + 1
        return max(0, reach - (self.length + 2 * self.padding))

    def starts(self) -> np.ndarray:
        return np.arange(self.count) * self.stride - self.padding

    def positions(self) -> np.ndarray:
        """``(count, kernel)``: each window's positions on the axis."""
        return self.starts()[:, None] + np.arange(self.kernel)[None, :] * self.dilation

    def first_nonnegative(self) -> np.ndarray:
        """Each window's first position ``>= 0`` (past the end if the dilation steps over the whole axis)."""
        starts = self.starts()
        return starts + np.maximum(0, -(starts // self.dilation)) * self.dilation

    def divisors(self, count_include_pad: bool) -> np.ndarray:
        """PyTorch's ``avg_pool`` divisor per window along this axis: the window clipped to the padded axis, or,
        without ``count_include_pad``, to the axis itself."""
        starts = self.starts()
        stops = np.minimum(starts + self.kernel, self.length + self.padding)
        if count_include_pad:
            return stops - starts
        return np.minimum(stops, self.length) - np.maximum(starts, 0)


def _pool_axes(function: str, image: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int], ceil_mode: bool) -> tuple[_PoolAxis, _PoolAxis]:
    """The windows along H (dim -2) and W (dim -1) of ``image``, checked as PyTorch checks them."""
    return tuple(_pool_axis(function, axis - 2, int(image.shape[axis + 2]), kernel[axis], stride[axis], padding[axis],
                            dilation[axis], ceil_mode) for axis in range(2))


def _pool_axis(function: str, dim: int, length: int, kernel: int, stride: int, padding: int, dilation: int,
               ceil_mode: bool) -> _PoolAxis:
    """PyTorch's ``pool2d_shape_check`` and ``pooling_output_shape`` for one axis: with ``ceil_mode`` a last window
    may run past the end, as long as it starts inside the input or its left padding."""
    if kernel <= 0 or stride <= 0 or dilation <= 0 or padding < 0:
        raise located_error(f"{function}: kernel_size {kernel}, stride {stride} and dilation {dilation} along dim {dim} must be "
                            f"positive and padding {padding} non-negative")
    if padding > kernel // 2:  # PyTorch's rule, whatever the dilation (which implies its other: half the window's reach)
        raise located_error(f"{function}: padding {padding} along dim {dim} must be at most half of kernel_size {kernel}, as "
                            f"PyTorch requires; pad the input with F.pad first for more")
    span = length + 2 * padding - dilation * (kernel - 1) - 1
    count = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (count - 1) * stride >= length + padding:
        count -= 1  # it would start in the end padding
    if count <= 0:
        raise located_error(f"{function}: a window of {kernel} (dilation {dilation}) does not fit dim {dim} of size {length} padded "
                            f"by {padding}; use a smaller kernel_size or dilation, or more padding")
    return _PoolAxis(length, kernel, stride, padding, dilation, count)


def _gathered_max(image: Tensor, axes: Sequence[_PoolAxis], return_indices: bool) -> Tensor | tuple[Tensor, Tensor]:
    """The max pool as a gather over the spatial ``axes`` of ``(N, C, *spatial)`` (two for ``max_pool2d``, three for
    ``max_pool3d``): each window's elements taken from the flattened volume (``tensor.take``), their first largest
    (``Tensor.max(dim)``) the value that takes the gradient. A slot in the padding reads the window's first element
    instead, which changes neither the max nor where it first occurs, so the padding needs no -inf and, as PyTorch,
    an all -inf window's index and gradient go to its first element. The indices are a constant table read at the
    winning slots."""
    batch, channels, volume = image.shape[0], image.shape[1], int(np.prod([axis.length for axis in axes]))
    counts, window = tuple(axis.count for axis in axes), int(np.prod([axis.kernel for axis in axes]))
    reads, indices, inside = _window_reads(axes)
    flat = image.reshape(batch, channels, volume)
    if (reads == volume).any():
        flat = pad(flat, (0, 1), value=-np.inf)  # what a window of padding only reads
    windows = apply("tensor.take", flat, apply("tensor.constant", value=reads.reshape(-1)), axis=2)
    values, slots = window_max(windows.reshape((batch, channels) + counts + (window,)), inside)
    if not return_indices:
        return values
    window_starts = np.arange(int(np.prod(counts)), dtype=np.int64).reshape(counts) * window
    table = apply("tensor.constant", value=indices.reshape(-1))
    return values, apply("tensor.take", table, slots + apply("tensor.constant", value=window_starts), axis=0)


def window_max(windows: Tensor, inside: np.ndarray | None = None) -> tuple[Tensor, Tensor]:
    """Each window's (the last dim's) winner as PyTorch's max pools pick it: the last NaN of a window holding one
    (its kernels keep ``val > max || isnan(val)``), else the first largest element. Returns its value, which alone
    takes the gradient (the window summed with the others masked to -0.0, as ``Tensor.max(dim)``), and its slot.
    ``inside`` (broadcast to the windows) marks the slots that may hold a NaN winner: a slot standing in for the
    padding repeats another element and must not win twice."""
    width = int(windows.shape[-1])
    slots = windows.argmax(-1, keepdim=True)
    nan = windows != windows
    if inside is not None:
        nan = nan & apply("tensor.constant", value=np.asarray(inside, bool))
    after_last_nan = apply("tensor.where", nan, apply("tensor.constant", value=np.arange(1, width + 1, dtype=np.int64)), 0)
    after_last_nan = after_last_nan.amax(-1, keepdim=True)
    slots = apply("tensor.where", after_last_nan > 0, after_last_nan - 1, slots)
    others = apply("tensor.not_equal", apply("tensor.constant", value=np.arange(width, dtype=np.int64)), slots)
    values = apply("tensor.where", others, np.asarray(-0.0), windows).sum(-1)
    return values, slots.squeeze(-1)


def _window_reads(axes: Sequence[_PoolAxis]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(O_1, ..., O_k, K_1 ... K_k)`` three times, slots row-major: where each window slot reads in the flattened
    volume, PyTorch's index for it, and whether it is inside the input. Inside the input both are the slot's own
    row-major flat index (``h W + w`` in 2-D); in the padding both are the window's first element, PyTorch's starting
    index (its first positions ``>= 0`` on every axis). For a window of padding only that index lies past the volume,
    as PyTorch's, and the slots read the volume's size: an appended -inf."""
    rank, lengths = len(axes), [axis.length for axis in axes]
    strides = np.cumprod((1,) + tuple(lengths[:0:-1]))[::-1]
    counts = tuple(axis.count for axis in axes)
    inside, flat, first = np.ones((1,) * 2 * rank, bool), 0, 0
    for index, (axis, stride) in enumerate(zip(axes, strides)):
        shape = [1] * 2 * rank
        shape[index], shape[rank + index] = axis.count, axis.kernel
        positions = axis.positions().reshape(shape)
        inside = inside & (positions >= 0) & (positions < axis.length)
        flat = flat + positions * int(stride)
        first = first + axis.first_nonnegative().reshape(shape[:rank] + [1] * rank) * int(stride)
    full = counts + tuple(axis.kernel for axis in axes)
    inside = np.broadcast_to(inside, full)
    indices = np.broadcast_to(np.where(inside, flat, first), full).reshape(counts + (-1,)).astype(np.int64)
    inside = inside.reshape(counts + (-1,))
    empty = ~inside.any(-1)
    return np.where(empty[..., None], int(np.prod(lengths)), indices).astype(np.int64), indices, inside
