"""Movement ``F.*`` with PyTorch's names and arguments: ``cat``, ``stack``, ``split``, ``chunk``, ``narrow``,
``squeeze``, ``unsqueeze``, ``flatten`` and ``pad`` (constant, reflect, replicate, circular).

Re-exported by ``frontend/functional_nn.py`` (so ``F.cat``, ``F.pad``...).
"""

from __future__ import annotations

import operator
from typing import Sequence

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import normalize_axis
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts
from kiln.frontend.cat_shape_checks import check_cat_shapes, check_stack_shapes
from kiln.frontend.autocast_policy import pads_from_edges_on_list


@autocasts("cat")
def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    joined = _legacy_empties_shaped(list(tensors), dim)
    check_cat_shapes(joined, dim)
    return apply("tensor.concat", *joined, axis=dim)


def _legacy_empties_shaped(tensors: list[Tensor], dim: int) -> list[Tensor]:
    """torch's legacy rule: a 1-D empty tensor (``torch.empty(0)``, Transformer-XL's initial mems) joins tensors of
    any rank, as an empty slice of their shape (it still takes part in the dtype promotion and gets its empty grad)."""
    shaped = [t for t in tensors if not (isinstance(t, Tensor) and tuple(t.shape) == (0,))]
    if not shaped or len(shaped) == len(tensors) or not isinstance(shaped[0], Tensor) or shaped[0].ndim == 1:
        return tensors
    axis = normalize_axis(dim, shaped[0].ndim)
    empty_shape = tuple(0 if i == axis else size for i, size in enumerate(shaped[0].shape))
    return [t.reshape(empty_shape) if isinstance(t, Tensor) and tuple(t.shape) == (0,) else t for t in tensors]


concat = cat


@autocasts("stack")
def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """PyTorch's ``stack``: equal-shaped tensors joined along a new axis ``dim`` (``cat`` of each unsqueezed)."""
    check_stack_shapes(tensors)
    axis = normalize_axis(dim, tensors[0].ndim + 1)
    return cat([unsqueeze(t, axis) for t in tensors], dim=axis)


def narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    return apply("tensor.slice", input, axis=dim, start=start, stop=start + length, step=1)


def split(tensor: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """PyTorch's ``split``: pieces of ``split_size`` (the last may be shorter) or of the listed sizes."""
    size = tensor.shape[dim]
    if isinstance(size, str):
        raise TraceError(f"split: axis {dim} of {tensor.type} is symbolic; split a static axis")
    sizes = split_size_or_sections
    if not isinstance(sizes, (list, tuple)):
        sizes = operator.index(sizes)
    if isinstance(sizes, int):
        sizes = [min(sizes, size - start) for start in range(0, size, sizes)]
    sizes = [operator.index(s) for s in sizes]  # 0-d int tensors as PyTorch takes them (``H_ * W_`` of a shapes tensor)
    starts = np.cumsum([0] + list(sizes))
    return tuple(narrow(tensor, dim, int(start), int(length)) for start, length in zip(starts, sizes))


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    size = input.shape[dim]
    return split(input, -(-size // chunks), dim)


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    return apply("tensor.expand_dims", input, axes=(dim,))


def squeeze(input: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Drop the size-1 dims (or those of ``dim`` that have size 1: another size is left as it is, as PyTorch's)."""
    if dim is None:
        axes = tuple(i for i, d in enumerate(input.shape) if d == 1)
    else:
        asked = (dim,) if isinstance(dim, int) else tuple(dim)
        axes = tuple(a for a in asked if not isinstance(input.shape[normalize_axis(a, input.ndim)], int)
                     or input.shape[normalize_axis(a, input.ndim)] == 1)
    return apply("tensor.squeeze", input, axes=axes) if axes else input


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim``; they must be static (the batch dim stays symbolic outside them)."""
    start, end = normalize_axis(start_dim, input.ndim), normalize_axis(end_dim, input.ndim)
    merged = input.shape[start : end + 1]
    if any(isinstance(d, str) for d in merged):
        raise TraceError(f"flatten: dims {start}..{end} of {input.type} include a symbolic dim; flatten static dims only")
    return input.reshape(input.shape[:start] + (int(np.prod(merged)),) + input.shape[end + 1 :])


def _padded_part(part: Tensor, pads: Sequence[int], mode: str, value: float | None) -> Tensor:
    """``pad`` of one part of a complex tensor (``pad``'s own name is its argument's there)."""
    return pad(part, pads, mode, value)


@autocasts("reflection_pad2d", when=pads_from_edges_on_list)
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """PyTorch's ``pad``: ``(before, after)`` pairs starting from the last dim.

    ``constant`` mode fills with ``value`` (default 0); a negative pad crops, as in PyTorch. The fill is one
    ``tensor.pad`` of the positive pads, then a ``tensor.slice`` per cropped axis (each side of an axis is padded or
    cropped, never both, so the order does not matter; filling first never pads an axis the crop emptied).
    ``reflect``, ``replicate`` and ``circular`` fill from the input's own edges (``frontend/functional_spatial.py``),
    so, as PyTorch, they refuse a nonzero ``value``. A complex input pads both parts (the imaginary one with 0).
    """
    from kiln.frontend.complex_tensor import ComplexTensor  # lazily: complex tensors build on the tensor

    if isinstance(input, ComplexTensor):
        return ComplexTensor(_padded_part(input.real, pad, mode, value), _padded_part(input.imag, pad, mode, None))
    if mode != "constant":
        if value is not None and value != 0:
            raise located_error(f"pad(mode={mode!r}) fills from the input's edges and takes no value, got value={value!r}; "
                                f"drop value, or use mode='constant' to fill with it")
        from kiln.frontend.functional_spatial import pad_from_edges

        return pad_from_edges(input, pad, mode)
    pairs, source = _constant_pad_pairs(input, pad), input
    low, high = tuple(max(before, 0) for before, _ in pairs), tuple(max(after, 0) for _, after in pairs)
    value = 0.0 if value is None else float(value)
    if any(low + high):
        input = apply("tensor.pad", input, low=low, high=high, interior=(0,) * input.ndim, value=value)
    from kiln.frontend.view_writes import own_storage  # lazily: it builds on the tensor

    return own_storage(_crop(input, pairs), source)  # a new tensor, as torch's, not a view of the input


def _constant_pad_pairs(input: Tensor, pad: Sequence[int]) -> list[tuple[int, int]]:
    """``F.pad``'s flat ``(before, after)`` pairs, last dim first, as one pair per axis in axis order (zeros where
    none is given), checked as PyTorch checks them: a crop may empty an axis but not cut past it."""
    pads = [int(p) for p in pad]
    if len(pads) % 2 or len(pads) // 2 > input.ndim:
        raise located_error(f"pad: {tuple(pads)} must be (before, after) pairs, from the last dim on, for at most the "
                            f"{input.ndim} dims of {input.type}")
    pairs = [(0, 0)] * (input.ndim - len(pads) // 2) + [(pads[i], pads[i + 1]) for i in range(len(pads) - 2, -1, -2)]
    for axis, (size, (before, after)) in enumerate(zip(input.shape, pairs)):
        if isinstance(size, str):
            if before or after:
                raise located_error(f"pad: cannot pad or crop the symbolic dim {size} (dim {axis} of {input.type}); "
                                    f"give it the pair (0, 0) or pad only static dims")
        elif size + min(before, 0) + min(after, 0) < 0:
            raise located_error(f"pad: the negative padding ({before}, {after}) crops more than the {size} elements of "
                                f"dim {axis} of {input.type}")
    return pairs


def _crop(input: Tensor, pairs: list[tuple[int, int]]) -> Tensor:
    """Drop ``-before`` leading and ``-after`` trailing elements of each axis with a negative pad (a narrow)."""
    result = input
    for axis, (before, after) in enumerate(pairs):
        if before < 0 or after < 0:
            size = result.shape[axis]
            result = apply("tensor.slice", result, axis=axis, start=max(-before, 0), stop=size - max(-after, 0), step=1)
    return result
