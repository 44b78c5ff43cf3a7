"""``F.conv_transpose1d``, ``F.instance_norm``, ``F.local_response_norm``, ``F.lp_pool1d/2d``, ``F.max_unpool1d/2d``,
``F.embedding_bag`` and the deprecated ``F.upsample*``, with PyTorch's names, argument orders and defaults (the layers
are in ``frontend/layers_extra.py``).

Nothing here adds an op; each is a few existing functions:

- ``conv_transpose1d`` is ``conv_transpose2d`` over a unit-height image, as ``conv1d`` is ``conv2d``.
- ``instance_norm`` is group norm with one group per channel; its running statistics, when given, move by the
  batch's mean of the per-instance statistics, as PyTorch's.
- ``local_response_norm`` sums the squares of a channel window from ``size`` shifted slices of the zero-padded input.
- ``lp_pool`` is PyTorch's formula over ``avg_pool``: ``(sign(f) relu(|f|) K)^(1/p)`` with ``f`` the mean of ``x^p``.
- ``max_unpool`` places each value at its index by a one-hot comparison with the output positions (``(N, C, L, O)``),
  so a symbolic batch stays symbolic; a position several indices hit takes the last value, as PyTorch's CPU kernel,
  and each of them the gradient there, as PyTorch's backward (a gather). An index outside the output raises when
  its values are known (eagerly), as PyTorch's; in a compiled program it writes nothing.
- ``embedding_bag`` reduces the looked-up rows over a bag-membership matrix built by comparing the positions with
  ``offsets``: ``(B, T)``, static in shape whatever the offsets hold.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend.functional_half import in_opmath
from kiln.frontend.norm_size_checks import verify_spatial_size
from kiln.frontend.eager_values import eager_array
from kiln.frontend.embedding_options import frequency_scaled, renormalize_rows
from kiln.frontend.index_range_checks import check_bag_indices_in_range
from kiln.frontend.sparse_embedding import record_sparse_lookup
from kiln.frontend.functional_conv import conv_transpose2d, single_size
from kiln.frontend.functional_conv3d import avg_pool3d, batched_volume, max_pool3d, triple
from kiln.frontend.functional_nn import (_pair, avg_pool2d, batched_pool_input, embedding_padding_index, like_pool_input, max_pool2d, pad,
                                        window_max)
from kiln.frontend.functional_norm import group_norm
from kiln.frontend.functional_pool1d import avg_pool1d, max_pool1d
from kiln.frontend.sync_batch_norm import record_running_statistics
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts


def _constant(value: Any, dtype: Any = np.int64) -> Tensor:
    return apply("tensor.constant", value=np.asarray(value, dtype))


# ConvTranspose1d -----------------------------------------------------------------------------------------------------


@autocasts("conv_transpose1d")
def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1, dilation: Any = 1) -> Tensor:
    """``(N, C_in, L) -> (N, C_out, L_out)`` (or unbatched ``(C_in, L)``) with PyTorch's weight ``(C_in, C_out/groups, K)``
    and ``L_out = (L - 1) stride - 2 padding + dilation (K - 1) + output_padding + 1``: ``conv_transpose2d`` over the
    unit-height image ``(N, C_in, 1, L)``."""
    if input.ndim not in (2, 3) or weight.ndim != 3:
        raise located_error(f"conv_transpose1d expects an (N, C_in, L) or (C_in, L) input and a (C_in, C_out/groups, K) weight, "
                            f"got {input.type} and {weight.type}")
    if input.ndim == 2:
        return conv_transpose1d(input.unsqueeze(0), weight, bias, stride, padding, output_padding, groups, dilation).squeeze(0)
    stride, padding = single_size("conv_transpose1d", "stride", stride), single_size("conv_transpose1d", "padding", padding)
    output_padding = single_size("conv_transpose1d", "output_padding", output_padding)
    dilation = single_size("conv_transpose1d", "dilation", dilation)
    if not 0 <= output_padding < max(stride, dilation):
        raise located_error(f"conv_transpose1d: output_padding {output_padding} must be non-negative and smaller than stride "
                            f"{stride} or dilation {dilation} (as PyTorch)")
    output = conv_transpose2d(input.unsqueeze(2), weight.unsqueeze(2), None, (1, stride), (0, padding), (0, output_padding), groups,
                              (1, dilation)).squeeze(2)
    return output if bias is None else output + bias.reshape(1, -1, 1)


# Instance norm -------------------------------------------------------------------------------------------------------


def instance_norm(input: Tensor, running_mean: Tensor | None = None, running_var: Tensor | None = None, weight: Tensor | None = None,
                  bias: Tensor | None = None, use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalize each ``(n, c)`` of ``(N, C, *)`` over ``*`` (group norm, one group per channel), as PyTorch's. Given
    running statistics, ``use_input_stats`` also records them moved by ``momentum`` towards the batch's mean of the
    per-instance means and unbiased variances; ``use_input_stats=False`` normalizes with them instead."""
    if input.ndim < 3:
        raise located_error(f"instance_norm expects an (N, C, *) input with at least one spatial dim, got {input.type}")
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise located_error("instance_norm: use_input_stats=False needs running_mean and running_var")
        from kiln.frontend.functional_nn import batch_norm

        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    verify_spatial_size(input)
    if running_mean is not None and running_var is not None:
        axes = tuple(range(2, input.ndim))
        count = apply("tensor.numel", input, axes=axes, dtype=input.dtype)
        per_instance = input.mean(axes, keepdim=True)
        centered = input - per_instance
        unbiased = (centered * centered).sum(axes) / (count - 1.0)
        record_running_statistics(running_mean, running_var, per_instance.reshape(input.shape[:2]).mean(0), unbiased.mean(0), momentum)
    return group_norm(input, input.shape[1], weight, bias, eps)


# Local response norm -------------------------------------------------------------------------------------------------


def local_response_norm(input: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> Tensor:
    """``x / (k + alpha mean(x^2 over the channel window))^beta``, the window ``size`` channels from ``c - size // 2``
    (zeros past the ends count), as PyTorch's."""
    if input.ndim < 3:
        raise located_error(f"local_response_norm: expected 3D or higher dimensionality input (got {input.ndim} dimensions)")
    channels = input.shape[1]
    if not isinstance(channels, int):
        raise located_error(f"local_response_norm needs a static channel dim, got {input.type}")

    def normalized(x: Tensor) -> Tensor:
        squares = pad(x * x, (0, 0) * (x.ndim - 2) + (size // 2, (size - 1) // 2))
        window = apply("tensor.slice", squares, axis=1, start=0, stop=channels, step=1)
        for shift in range(1, size):
            window = window + apply("tensor.slice", squares, axis=1, start=shift, stop=shift + channels, step=1)
        return x / (window * (alpha / size) + k) ** beta

    return in_opmath(normalized, input)  # a half input in float32 (its squares overflow float16), rounded once


# Power-average pooling -----------------------------------------------------------------------------------------------


def lp_pool1d(input: Tensor, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False) -> Tensor:
    """``(sum over each window of x^p)^(1/p)`` over ``(N, C, L)``, as PyTorch: the ``avg_pool1d`` of ``x^p`` times the
    kernel size, through ``sign(f) relu(|f|)``; ``p = +-inf`` is the max (min) of ``|x|``."""
    if math.isinf(norm_type):
        pooled = max_pool1d(input.abs() if norm_type > 0 else -input.abs(), kernel_size, stride, 0, 1, ceil_mode)
        return pooled if norm_type > 0 else -pooled
    kernel = single_size("lp_pool1d", "kernel_size", kernel_size)
    return _lp_root(avg_pool1d(input ** float(norm_type), kernel_size, stride, 0, ceil_mode), kernel, norm_type)


def lp_pool2d(input: Tensor, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False) -> Tensor:
    """``(sum over each window of x^p)^(1/p)`` over ``(N, C, H, W)``, as PyTorch: the ``avg_pool2d`` of ``x^p`` times
    ``KH KW``, through ``sign(f) relu(|f|)``; ``p = +-inf`` is the max (min) of ``|x|``."""
    if math.isinf(norm_type):
        pooled = max_pool2d(input.abs() if norm_type > 0 else -input.abs(), kernel_size, stride, 0, 1, ceil_mode)
        return pooled if norm_type > 0 else -pooled
    height, width = _pair(kernel_size)
    return _lp_root(avg_pool2d(input ** float(norm_type), kernel_size, stride, 0, ceil_mode), height * width, norm_type)


def lp_pool3d(input: Tensor, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False) -> Tensor:
    """``(sum over each window of x^p)^(1/p)`` over ``(N, C, D, H, W)``, as PyTorch: the ``avg_pool3d`` of ``x^p`` times
    ``KD KH KW``, through ``sign(f) relu(|f|)``; ``p = +-inf`` is the max (min) of ``|x|``."""
    if math.isinf(norm_type):
        pooled = max_pool3d(input.abs() if norm_type > 0 else -input.abs(), kernel_size, stride, 0, 1, ceil_mode)
        return pooled if norm_type > 0 else -pooled
    kernel = triple("lp_pool3d", "kernel_size", kernel_size)
    return _lp_root(avg_pool3d(input ** float(norm_type), kernel_size, stride, 0, ceil_mode), math.prod(kernel), norm_type)


def _lp_root(mean: Tensor, count: int, norm_type: float) -> Tensor:
    return (mean.sign() * apply("tensor.relu", mean.abs()) * float(count)) ** (1.0 / norm_type)


# Max unpooling -------------------------------------------------------------------------------------------------------


def max_unpool1d(input: Tensor, indices: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 output_size: Any = None) -> Tensor:
    """The partial inverse of ``max_pool1d(..., return_indices=True)``: ``(N, C, L) -> (N, C, L_out)``, each value at its
    index, zeros elsewhere; ``L_out = (L - 1) stride - 2 padding + kernel_size`` unless ``output_size`` says otherwise."""
    geometry = [(single_size("max_unpool1d", name, value),) for name, value in
                (("kernel_size", kernel_size), ("stride", kernel_size if stride is None else stride), ("padding", padding))]
    return _unpool("max_unpool1d", input, indices, *geometry, output_size)


@autocasts("max_unpool2d")
def max_unpool2d(input: Tensor, indices: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 output_size: Any = None) -> Tensor:
    """The partial inverse of ``max_pool2d(..., return_indices=True)``: ``(N, C, H, W) -> (N, C, H_out, W_out)``, each
    value at its flat index ``h W_out + w``, zeros elsewhere; sizes as ``max_unpool1d``'s on each axis."""
    geometry = [_pair(value) for value in (kernel_size, kernel_size if stride is None else stride, padding)]
    return _unpool("max_unpool2d", input, indices, *geometry, output_size)


@autocasts("max_unpool3d")
def max_unpool3d(input: Tensor, indices: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 output_size: Any = None) -> Tensor:
    """The partial inverse of ``max_pool3d``'s indices: ``(N, C, D, H, W) -> (N, C, D_out, H_out, W_out)``, each value at
    its flat index ``(d H_out + h) W_out + w``, zeros elsewhere; sizes as ``max_unpool1d``'s on each axis."""
    geometry = [triple("max_unpool3d", name, value) for name, value in
                (("kernel_size", kernel_size), ("stride", kernel_size if stride is None else stride), ("padding", padding))]
    return _unpool("max_unpool3d", input, indices, *geometry, output_size)


def _unpool(function: str, input: Tensor, indices: Tensor, kernel: tuple, stride: tuple, padding: tuple, output_size: Any) -> Tensor:
    spatial = len(kernel)
    batched = batched_volume(function, input) if spatial == 3 else batched_pool_input(function, input, spatial)
    if tuple(indices.shape) != tuple(input.shape) or not indices.dtype.is_int:
        raise located_error(f"{function}: indices {indices.type} must be integers shaped as the input {input.type}")
    size = _unpool_size(function, input, kernel, stride, padding, output_size)
    _check_unpool_indices(function, indices, size)
    batch, channels, plane = batched.shape[0], batched.shape[1], int(np.prod(batched.shape[2:]))
    values = batched.reshape(batch, channels, plane, 1)
    hits = indices.reshape(batch, channels, plane, 1).eq(_constant(np.arange(int(np.prod(size)))))
    last = _constant(np.arange(plane).reshape(plane, 1))
    last = hits & last.eq(apply("tensor.where", hits, last, -1).amax(2, keepdim=True))
    every = apply("tensor.where", hits, values, 0.0).sum(2)
    kept = apply("tensor.where", last, values, 0.0).sum(2).detach()
    output = kept + (every - every.detach())  # the last write's value; each written value's gradient, PyTorch's gather
    output = output.reshape((batch, channels) + tuple(size))
    return output if input.ndim == spatial + 2 else output.squeeze(0)


def _check_unpool_indices(function: str, indices: Tensor, size: tuple[int, ...]) -> None:
    """Indices known now (eager ones) must fall in the output plane, as PyTorch checks; a traced tensor's values are
    not known until it runs, and there an index outside the plane writes nothing (no check op to raise at run time)."""
    array = eager_array(indices)
    plane = int(np.prod(size))
    bad = None if array is None else np.argwhere((array < 0) | (array >= plane))
    if bad is not None and len(bad):
        position = tuple(int(i) for i in bad[0])
        raise located_error(f"{function}: index {int(array[position])} at {position} is outside the output plane "
                            f"{'x'.join(map(str, size))} (flat indices in [0, {plane})); pass the indices max_pool returned "
                            "for this geometry, or the output_size it pooled from")


def _unpool_size(function: str, input: Tensor, kernel: tuple, stride: tuple, padding: tuple, output_size: Any) -> tuple[int, ...]:
    """PyTorch's ``_unpool_output_size``: ``(L - 1) stride - 2 padding + kernel`` per axis, or ``output_size`` (its last
    dims) if within ``stride`` of that."""
    lengths = input.shape[-len(kernel):]
    default = tuple((n - 1) * s + k - 2 * p for n, k, s, p in zip(lengths, kernel, stride, padding))
    if output_size is None:
        return default
    size = (output_size,) if isinstance(output_size, (int, np.integer)) else tuple(output_size)
    size = size[2:] if len(size) == len(kernel) + 2 else size
    if len(size) != len(kernel):
        raise located_error(f"{function}: output_size should be a sequence containing {len(kernel)} or {len(kernel) + 2} elements, "
                            f"but it has a length of '{len(size)}'")
    for axis, (want, usual, step) in enumerate(zip(size, default, stride)):
        if not usual - step < want < usual + step:
            raise located_error(f'{function}: invalid output_size "{list(size)}" (dim {axis} must be between {usual - step} '
                                f'and {usual + step})')
    return tuple(int(s) for s in size)


# Pools with indices (PyTorch's ``*_with_indices`` names) ----------------------------------------------------------


def max_pool1d_with_indices(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                            ceil_mode: bool = False, return_indices: bool = False) -> tuple[Tensor, Tensor]:
    """``F.max_pool1d(..., return_indices=True)``: the values and each winner's position; ``return_indices`` is ignored,
    as PyTorch's."""
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def max_pool2d_with_indices(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                            ceil_mode: bool = False, return_indices: bool = False) -> tuple[Tensor, Tensor]:
    """``F.max_pool2d(..., return_indices=True)``: the values and each winner's flat index ``h W + w``."""
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def adaptive_max_pool1d_with_indices(input: Tensor, output_size: Any, return_indices: bool = False) -> tuple[Tensor, Tensor]:
    """``(N, C, L) -> (N, C, O)`` values and int64 positions: cell ``i`` is the first largest of PyTorch's window
    ``floor(i L / O) .. ceil((i + 1) L / O)``; see ``_adaptive_max_with_indices``."""
    batched = batched_pool_input("adaptive_max_pool1d", input, 1)
    size = single_size("adaptive_max_pool1d", "output_size", output_size)
    values, indices = _adaptive_max_with_indices("adaptive_max_pool1d", batched, (size,))
    return like_pool_input(values, input, 1), like_pool_input(indices, input, 1)


def adaptive_max_pool2d_with_indices(input: Tensor, output_size: Any, return_indices: bool = False) -> tuple[Tensor, Tensor]:
    """``(N, C, H, W) -> (N, C, OH, OW)`` values and int64 flat indices ``h W + w``, any output size (``None`` keeps a
    dim); see ``_adaptive_max_with_indices``."""
    batched = batched_pool_input("adaptive_max_pool2d", input, 2)
    sizes = _pair(output_size) if output_size is not None and not isinstance(output_size, (tuple, list)) else tuple(output_size or (None, None))
    if len(sizes) != 2:
        raise located_error(f"adaptive_max_pool2d: output_size must be an int or an (OH, OW) pair, got {output_size!r}")
    out = tuple(int(s if o is None else o) for s, o in zip(batched.shape[2:], sizes))
    values, indices = _adaptive_max_with_indices("adaptive_max_pool2d", batched, out)
    return like_pool_input(values, input), like_pool_input(indices, input)


def _adaptive_max_with_indices(function: str, batched: Tensor, out: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Every window's positions gathered from the flattened plane (``(N, C, cells, widest)``, a shorter window padded by
    repeating a position right after itself, which moves neither the first largest nor its gradient), then ``max``:
    the values, and the argmax read back through the table of positions."""
    if min(out) <= 0:
        raise located_error(f"{function}: output_size {out} must be positive")
    table = _adaptive_window_table(tuple(int(s) for s in batched.shape[2:]), out)
    batch, channels = batched.shape[0], batched.shape[1]
    plane = batched.reshape(batch, channels, -1)
    gathered = apply("tensor.take", plane, _constant(table.reshape(-1)), axis=2).reshape(batch, channels, table.shape[0], table.shape[1])
    values, winner = window_max(gathered)
    flat = winner + _constant(np.arange(table.shape[0]) * table.shape[1])
    indices = apply("tensor.take", _constant(table.reshape(-1)), flat, axis=0)
    return values.reshape((batch, channels) + out), indices.reshape((batch, channels) + out)


def _adaptive_window_table(size: tuple[int, ...], out: tuple[int, ...]) -> np.ndarray:
    """``(prod(out), widest window)``: the flat positions of each of PyTorch's adaptive windows in row-major order."""
    from kiln.frontend.functional_pool1d import _adaptive_indices

    per_axis = [_adaptive_indices(s, o) for s, o in zip(size, out)]  # (o, width), each row padded with its last position
    strides = np.cumprod((1,) + size[:0:-1])[::-1]
    rows = None
    for positions, stride in zip(per_axis, strides):
        scaled = positions * int(stride)
        rows = scaled if rows is None else (rows[:, None, :, None] + scaled[None, :, None, :]).reshape(
            rows.shape[0] * scaled.shape[0], rows.shape[1] * scaled.shape[1])
    return rows.astype(np.int64)


# EmbeddingBag --------------------------------------------------------------------------------------------------------


class BagOptionError(TraceError, ValueError):
    """An option ``embedding_bag`` refuses in a mode (PyTorch's ``ValueError``), located at the user's line."""


class BagDtypeError(TraceError, RuntimeError):
    """``per_sample_weights`` of another dtype than the table (PyTorch's ``RuntimeError``), located at the user's line."""


def embedding_bag(input: Tensor, weight: Tensor, offsets: Any = None, max_norm: float | None = None, norm_type: float = 2,
                  scale_grad_by_freq: bool = False, mode: str = "mean", sparse: bool = False, per_sample_weights: Tensor | None = None,
                  include_last_offset: bool = False, padding_idx: int | None = None) -> Tensor:
    """The sum, mean or max of bags of ``weight``'s rows: ``(B, L)`` indices (each row a bag), or ``(T,)`` indices with
    ``offsets`` (``B`` bag starts, or ``B + 1`` with ``include_last_offset``). ``per_sample_weights`` scales each row
    (``mode='sum'``); ``padding_idx`` entries leave their bag and the mean's count; an empty bag gives zeros."""
    _check_bag_options(input, weight, mode, scale_grad_by_freq, sparse, per_sample_weights)
    input = check_bag_indices_in_range(input, weight.shape[0])
    if max_norm is not None:
        renormalize_rows(input, weight, max_norm, norm_type, "embedding_bag")
    rows = apply("tensor.take", weight, input, axis=0)
    if sparse:  # a sparse COO .grad eagerly, as PyTorch's (frontend/sparse_embedding.py)
        record_sparse_lookup(rows, weight, input, padding_idx, scale_grad_by_freq, "embedding_bag", mode)
    if scale_grad_by_freq:  # each row's gradient divided by its index's count in the whole input, as torch's
        rows = frequency_scaled(rows, input, weight.shape[0])
    if input.ndim == 2:
        if offsets is not None:
            raise located_error("embedding_bag: if input is 2D, then offsets has to be None, as input is treated is a mini-batch of "
                                "fixed length sequences")
        included = _constant(np.ones((1, 1)), bool).broadcast_to(tuple(input.shape))
        samples = input
    else:
        included = _bag_membership(input, offsets, include_last_offset)
        rows, samples = rows.unsqueeze(0), input.unsqueeze(0)
        per_sample_weights = None if per_sample_weights is None else per_sample_weights.unsqueeze(0)
    if padding_idx is not None:
        included = included & samples.ne(embedding_padding_index(padding_idx, weight.shape[0]))
    # half rows are weighted and summed in float32, rounded once per bag (torch's kernel accumulates in float32)
    return in_opmath(lambda r, w: _reduce_bags(r, included, mode, w), rows, per_sample_weights)


def _check_bag_options(input, weight, mode, scale_grad_by_freq, sparse, per_sample_weights) -> None:
    if mode not in ("sum", "mean", "max"):
        raise located_error(f"embedding_bag: mode has to be one of sum, mean or max, got {mode!r}")
    if scale_grad_by_freq and mode == "max":
        raise located_error("max mode does not support scaling the gradient by the frequency", kind=BagOptionError)
    if weight.ndim != 2 or input.ndim not in (1, 2) or not input.dtype.is_int:
        raise located_error(f"embedding_bag expects integer (B, L) or (T,) indices and a 2-D weight, got {input.type} and {weight.type}")
    if per_sample_weights is not None and (mode != "sum" or tuple(per_sample_weights.shape) != tuple(input.shape)):
        raise located_error(f"embedding_bag: per_sample_weights {per_sample_weights.type} must have the input's shape {input.type}, "
                            f"and is only supported for mode='sum' (got mode={mode!r})")
    if per_sample_weights is not None and per_sample_weights.dtype is not weight.dtype:  # torch refuses, not promotes
        raise located_error(f"Expected tensor for argument #1 'weight' to have the same type as tensor for argument #1 "
                            f"'per_sample_weights'; but type {weight.type()} does not equal {per_sample_weights.type()} "
                            "(while checking arguments for embedding_bag)", kind=BagDtypeError)


def _bag_membership(input: Tensor, offsets: Any, include_last_offset: bool) -> Tensor:
    """``(B, T)``: whether position ``t`` of the flat input lies in bag ``b``, ``offsets[b] <= t < end[b]`` with ``end``
    the next offset (the input's end for the last bag without ``include_last_offset``; with it the last offset should be
    the input's length, as PyTorch requires: its CPU kernels disagree on what lies past it)."""
    if offsets is None:
        raise located_error("embedding_bag: a 1-D input needs offsets, a 1-D tensor of the bags' starts")
    offsets = offsets if isinstance(offsets, Tensor) else _constant(offsets)
    total = input.shape[0]
    if offsets.ndim != 1 or not isinstance(offsets.shape[0], int) or not isinstance(total, int) or not offsets.dtype.is_int:
        raise located_error(f"embedding_bag: offsets must be a 1-D integer tensor of static length and the input's length static, "
                            f"got offsets {offsets.type} and input {input.type}")
    offsets = offsets.long()
    count = offsets.shape[0]
    starts = offsets[: count - 1] if include_last_offset else offsets
    ends = offsets[1:] if include_last_offset else apply("tensor.concat", offsets[1:], _constant([total]), axis=0)
    positions = _constant(np.arange(total)[None, :])
    return (starts.unsqueeze(1) <= positions) & (positions < ends.unsqueeze(1))


def _reduce_bags(rows: Tensor, included: Tensor, mode: str, per_sample_weights: Tensor | None) -> Tensor:
    """``rows (B or 1, L, D)`` reduced over ``L`` where ``included (B, L)``."""
    mask = included.unsqueeze(-1)
    if mode == "max":
        return _bag_max(rows, mask)
    if per_sample_weights is not None:
        rows = rows * per_sample_weights.unsqueeze(-1)
    total = apply("tensor.where", mask, rows, 0.0).sum(-2)
    if mode == "sum":
        return total
    return total / included.to(rows.dtype).sum(-1, keepdim=True).clamp(min=1.0)


def _bag_max(rows: Tensor, mask: Tensor) -> Tensor:
    """Each bag's max per feature as PyTorch's CPU kernel scans it: the bag's first element, replaced by each later one
    that is larger. So a NaN wins only as the first element (a later NaN is never larger), a bag of -inf keeps its
    first element (never a slot outside the bag), and a tie stays with the first; the winner alone takes the gradient,
    and an empty bag is zeros. ``rows (B or 1, T, D)``, ``mask (B, T, 1)``."""
    length = rows.shape[-2]
    if not isinstance(length, int):
        raise located_error(f"embedding_bag: mode='max' needs bags of a static length, got rows {rows.type}; pad to one length")
    positions = _constant(np.arange(length).reshape(-1, 1))
    first = mask.long().argmax(-2, keepdim=True)  # (B, 1, 1)
    first_value = apply("tensor.where", positions != first, np.asarray(-0.0), rows).sum(-2, keepdim=True)
    largest = apply("tensor.where", mask & (rows == rows), rows, -math.inf).amax(-2, keepdim=True).detach()
    first_largest = (mask & (rows == largest)).long().argmax(-2, keepdim=True)
    winner = apply("tensor.where", first_value != first_value, first, first_largest)
    value = apply("tensor.where", positions != winner, np.asarray(-0.0), rows).sum(-2)
    return apply("tensor.where", mask.any(-2), value, 0.0)


# Deprecated upsampling -----------------------------------------------------------------------------------------------


def upsample(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest", align_corners: bool | None = None) -> Tensor:
    """Deprecated ``F.interpolate``, warning as PyTorch does."""
    warnings.warn("`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate` instead.", stacklevel=2)
    return _interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:
    """Deprecated ``F.interpolate(..., mode='nearest')``, warning as PyTorch does."""
    warnings.warn("`nn.functional.upsample_nearest` is deprecated. Use `nn.functional.interpolate` instead.", stacklevel=2)
    return _interpolate(input, size, scale_factor, "nearest", None)


def upsample_bilinear(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:
    """Deprecated ``F.interpolate(..., mode='bilinear', align_corners=True)``, warning as PyTorch does."""
    warnings.warn("`nn.functional.upsample_bilinear` is deprecated. Use `nn.functional.interpolate` instead.", stacklevel=2)
    return _interpolate(input, size, scale_factor, "bilinear", True)


def _interpolate(input: Tensor, size: Any, scale_factor: Any, mode: str, align_corners: bool | None) -> Tensor:
    from kiln.frontend.functional_spatial import interpolate

    return interpolate(input, size, scale_factor, mode, align_corners)


__all__: Sequence[str] = [
    "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices", "conv_transpose1d", "embedding_bag", "instance_norm",
    "local_response_norm", "lp_pool1d", "lp_pool2d", "lp_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_unpool1d",
    "max_unpool2d", "max_unpool3d", "upsample", "upsample_bilinear", "upsample_nearest",
]
