"""``F.pad``'s edge modes (``reflect``, ``replicate``, ``circular``), and the gather helpers the spatial functions share.

An edge pad is one ``tensor.take`` per axis with constant indices (the mirrored, clamped or wrapped source of every
output cell); the gradient is the matching ``tensor.scatter_add``, which sums what several outputs read from one cell.
``F.pad`` (``frontend/functional_movement.py``) calls ``pad_from_edges`` for these modes; ``_take`` and
``_static_dims`` serve interpolation, ``unfold`` and the shuffles too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error


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
