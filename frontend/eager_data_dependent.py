"""The ops whose result's shape depends on the values, run eagerly as PyTorch runs them.

```python
picked = logits[mask]                   # (count, classes): gradients reach logits
loss = F.cross_entropy(out[valid], y[valid])
classes, counts = labels.unique(return_counts=True)
rows, cols = adjacency.nonzero(as_tuple=True)
```

A trace has no values, so it refuses these (``tensor_value_dependent._data_dependent``
says what to trace instead), except on a tensor built from constants only, whose
values the trace knows (``trace_known_values.py``): there the results are constants. Eagerly the values exist: the positions a mask
picks, the distinct values, the counts are computed from the arrays at once
and become constants, so ``x[mask]`` and ``masked_select`` are one ``take`` of
fixed positions, which ``backward()`` differentiates as any other op (each
new count of picked elements is a new shape to its compiled backward).
Integer and index results (``nonzero``, ``unique``, ``bincount``, ``histc``)
carry no gradient, as in PyTorch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType
from kiln.frontend.eager_values import eager_array, eager_leaf
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import TraceContext, located_error


def is_eager(tensor: Any) -> bool:
    """An eager tensor, or a ``Parameter`` read outside a trace (``kiln.tensor(..., requires_grad=True)`` is one)."""
    return _array(tensor) is not None


def eager_with_mask(x: Any, mask: Any) -> bool:
    """Whether ``x`` is eager and ``mask`` is eager or a host array/list (``x[mask]``, ``masked_select``)."""
    return is_eager(x) and (not isinstance(mask, Tensor) or is_eager(mask))


def concrete_array(tensor: Any) -> np.ndarray | None:
    """The values of an eager tensor, of a ``Parameter`` read outside a trace, or of a traced tensor built from
    constants only; None for any other traced tensor."""
    return _array(tensor)


def argument_values(value: Any, refusal: str) -> Any:
    """A number, list or array as it is; a tensor given where PyTorch reads its values on the host (``quantile``'s
    ``q``, ``tensor_split``'s indices) as its array: an eager one's, a traced one's computed from constants or, in a
    ``kiln.compile`` trace, from the call's inputs (guarded); else the located ``refusal``."""
    from kiln.frontend.tensor_methods import traced_values  # lazily: the methods build on this module

    if not isinstance(value, Tensor):
        return value
    array = concrete_array(value)
    array = traced_values(value) if array is None else array
    if array is None:
        raise located_error(refusal)
    return np.asarray(array)


def _array(tensor: Any) -> np.ndarray | None:
    """The values of an eager tensor or parameter, or of a traced tensor computed from constants only (DINO's
    ``torch.unique_consecutive(torch.tensor([inp.shape[-1] for inp in x]), return_counts=True)``, known while
    tracing, so these ops give constants there as torch's eager run gives them)."""
    from kiln.frontend.module import ArrayLeaf
    from kiln.frontend.trace_known_values import known_value

    if isinstance(tensor, ArrayLeaf):
        return None if _tracing() else np.asarray(tensor.data)
    if not isinstance(tensor, Tensor):
        return None
    array = eager_array(tensor)
    return known_value(tensor) if array is None and _tracing() else array


def _tracing() -> bool:
    """Inside a trace (not the eager context, whose ops run as they are built)."""
    return TraceContext.active() and not TraceContext.current().eager


def _leaf(array: np.ndarray) -> Tensor:
    """A result: a constant of the graph inside a trace, an eager tensor outside."""
    array = np.ascontiguousarray(array)
    return apply("tensor.constant", value=array) if _tracing() else eager_leaf(array)


def _positions(array: np.ndarray) -> Tensor:
    return apply("tensor.constant", value=np.flatnonzero(array).astype(np.int64))


def nonzero(x: Tensor, as_tuple: bool = False) -> Any:
    """Indices of the nonzero elements: ``(count, ndim)`` int64, or one ``(count,)`` tensor per dim."""
    return nonzero_of(_array(x), as_tuple)


def nonzero_of(array: np.ndarray, as_tuple: bool = False) -> Any:
    """``nonzero`` of a tensor whose values are ``array`` (constants inside a trace)."""
    if as_tuple:
        return tuple(_leaf(np.asarray(i, np.int64)) for i in (np.nonzero(array) if array.ndim else (np.flatnonzero(array),)))
    return _leaf(np.argwhere(array).astype(np.int64))


def masked_rows(x: Tensor, mask: Any) -> Tensor:
    """``x[mask]`` for a bool ``mask`` over ``x``'s leading dims: ``(count, *rest)``, a differentiable gather."""
    picks = np.asarray(_array(mask) if isinstance(mask, Tensor) else mask)
    lead = tuple(x.shape[:picks.ndim])
    if picks.ndim > x.ndim or picks.shape != lead:
        raise located_error(f"The shape of the mask {list(picks.shape)} does not match the shape of the indexed tensor "
                            f"{list(x.shape)} (x[mask] takes a bool mask of the tensor's leading dims)")
    rest = tuple(x.shape[picks.ndim:])
    return apply("tensor.take", x.reshape((-1,) + rest), _positions(picks), axis=0)


def masked_select(x: Tensor, mask: Any) -> Tensor:
    """The elements of ``x`` where ``mask`` (broadcast together) is true, as one row-major vector."""
    picks = np.asarray(_array(mask) if isinstance(mask, Tensor) else mask)
    if picks.dtype != np.bool_:
        raise located_error(f"masked_select: expected a bool mask, got {picks.dtype}")
    shape = np.broadcast_shapes(tuple(x.shape), picks.shape)
    source = x.broadcast_to(shape) if tuple(x.shape) != shape else x
    return apply("tensor.take", source.reshape(-1), _positions(np.broadcast_to(picks, shape)), axis=0)


def unique(x: Tensor, sorted: bool = True, return_inverse: bool = False, return_counts: bool = False,
           dim: int | None = None) -> Any:
    """The distinct values (sorted, as PyTorch's CPU kernel gives them either way), with the inverse and counts."""
    array = _array(x)
    axis = None if dim is None else dim % max(array.ndim, 1)
    values, inverse, counts = np.unique(array, return_inverse=True, return_counts=True, axis=axis)
    inverse = inverse.reshape(array.shape if axis is None else (array.shape[axis],))
    return _with_extras(values, inverse, counts, return_inverse, return_counts)


def unique_consecutive(x: Tensor, return_inverse: bool = False, return_counts: bool = False, dim: int | None = None) -> Any:
    """Each run of equal consecutive values (or slices along ``dim``) once, with the inverse and run lengths."""
    array = _array(x)
    axis = 0 if dim is None else dim % max(array.ndim, 1)
    moved = array.reshape(-1) if dim is None else np.moveaxis(array, axis, 0)
    if moved.shape[0] == 0:
        return _with_extras(array.reshape(-1) if dim is None else array, np.zeros(array.shape if dim is None else (0,), np.int64),
                            np.zeros(0, np.int64), return_inverse, return_counts)
    slice_size = int(np.prod(moved.shape[1:], dtype=np.int64))  # explicit: one element leaves 0 rows, which -1 cannot size
    changes = np.any((moved[1:] != moved[:-1]).reshape(moved.shape[0] - 1, slice_size), axis=1)
    starts = np.concatenate([[0], np.flatnonzero(changes) + 1])
    values = moved[starts] if dim is None else np.moveaxis(moved[starts], 0, axis)
    inverse = (np.cumsum(np.concatenate([[False], changes])).astype(np.int64)).reshape(array.shape if dim is None else (-1,))
    counts = np.diff(np.concatenate([starts, [moved.shape[0]]])).astype(np.int64)
    return _with_extras(values, inverse, counts, return_inverse, return_counts)


def _with_extras(values: np.ndarray, inverse: np.ndarray, counts: np.ndarray, return_inverse: bool, return_counts: bool) -> Any:
    results = [_leaf(values)] + ([_leaf(inverse.astype(np.int64))] if return_inverse else []) + \
        ([_leaf(counts.astype(np.int64))] if return_counts else [])
    return results[0] if len(results) == 1 else tuple(results)


def bincount(x: Tensor, weights: Any = None, minlength: int = 0) -> Tensor:
    """How often each non-negative integer occurs in the 1-D ``x`` (or the sum of its ``weights``)."""
    array = _array(x)
    if array.ndim != 1 or not DType.of(array.dtype).is_int or (array < 0).any():
        raise located_error(f"bincount only supports 1-d non-negative integral inputs, got {x.type}")
    if weights is None:
        return _leaf(np.bincount(array, minlength=minlength).astype(np.int64))
    weighed = np.asarray(_array(weights) if isinstance(weights, Tensor) else weights)
    dtype = np.float32 if weighed.dtype == np.float32 else np.float64  # PyTorch's: float32 stays, the rest double
    return _leaf(np.bincount(array, weighed.astype(np.float64), minlength=minlength).astype(dtype))


class UnsupportedDtypeError(TraceError, NotImplementedError):
    """An op given a dtype PyTorch's CPU kernel does not take (its ``NotImplementedError``: semseg's
    ``torch.histc`` of the long predictions)."""


def histc(x: Tensor, bins: int = 100, min: float = 0, max: float = 0) -> Tensor:
    """``bins`` equal-width counts between ``min`` and ``max`` (the data's range when both are 0), of ``x``'s dtype."""
    array = _array(x)
    dtype = DType.of(array.dtype)
    if not dtype.is_float:
        from kiln.frontend.tensor_bitwise import TORCH_NAMES  # lazily: it builds on the Tensor

        kernel = "linspace_cpu" if dtype is DType.bool else "histogram_cpu"  # torch's bins fail first for bool
        raise located_error(f'"{kernel}" not implemented for \'{TORCH_NAMES.get(dtype, dtype)}\' (as in PyTorch): '
                            f"histc counts floating-point tensors, not {x.type}; cast first (x.float())",
                            kind=UnsupportedDtypeError)
    low, high = (float(min), float(max)) if (min, max) != (0, 0) else (float(array.min(initial=0)), float(array.max(initial=0)))
    if low == high:
        low, high = low - 1, high + 1
    counts, _ = np.histogram(array.astype(np.float64), bins=bins, range=(low, high))
    return _leaf(counts.astype(array.dtype))


class Histogram(NamedTuple):
    """What ``torch.histogram`` returns (``torch.return_types.histogram``): the counts and the ``bins + 1`` edges."""

    hist: Tensor
    bin_edges: Tensor


def histogram(x: Tensor, bins: Any = 100, *, range: Any = None, weight: Any = None, density: bool = False,
              out: Any = None) -> Histogram:
    """NumPy's ``histogram`` of a floating tensor (torch's ``histogram`` is it): ``bins`` equal-width bins over
    ``range`` (the data's, widened by 0.5 each side when it is one value) or a 1-D tensor of edges; ``weight`` per
    element, ``density`` normalised to integrate to 1; both results of ``x``'s dtype."""
    array = _array(x)
    dtype = DType.of(array.dtype)
    if not dtype.is_float:
        from kiln.frontend.tensor_bitwise import TORCH_NAMES  # lazily: it builds on the Tensor

        raise located_error(f'"histogramdd" not implemented for \'{TORCH_NAMES.get(dtype, dtype)}\' (as in PyTorch): '
                            f"histogram counts floating-point tensors, not {x.type}; cast first (x.float())",
                            kind=UnsupportedDtypeError)
    if range is not None and range[0] > range[1]:
        raise located_error(f"torch.histogramdd: min should not exceed max, but got min {range[0]:g} max {range[1]:g} for "
                            "dimension 0 (kiln.histogram's range=(min, max))")
    edges = _array(bins).astype(np.float64) if isinstance(bins, Tensor) else int(bins)
    weights = None if weight is None else _array(weight).astype(np.float64).reshape(-1)
    counts, bin_edges = np.histogram(array.astype(np.float64).reshape(-1), bins=edges, range=range, weights=weights,
                                     density=density)
    return Histogram(_leaf(counts.astype(array.dtype)), _leaf(bin_edges.astype(array.dtype)))


def repeat_by_counts(x: Tensor, repeats: Any, axis: int) -> Tensor:
    """``x.repeat_interleave(repeats, dim=axis)`` for per-slice counts (a tensor or list, one per slice along ``axis``,
    or one for all): one differentiable ``take`` of the positions the counts give."""
    counts = np.asarray(_array(repeats) if isinstance(repeats, Tensor) else repeats)
    size = x.shape[axis]
    if counts.ndim > 1 or counts.size not in (1, size) or (counts.size and not np.issubdtype(counts.dtype, np.integer)) \
            or (counts < 0).any():
        raise located_error(f"repeat_interleave: repeats must be non-negative integers, one per slice along dim {axis} "
                            f"({size}) or a single count; got {counts.dtype} of shape {list(counts.shape)}")
    positions = np.repeat(np.arange(size, dtype=np.int64), np.broadcast_to(counts.reshape(-1), (size,)))
    return apply("tensor.take", x, apply("tensor.constant", value=positions), axis=axis)


def allclose(x: Tensor, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> bool:
    """Whether ``|x - other| <= atol + rtol * |other|`` everywhere (broadcast), as PyTorch's ``allclose``."""
    a, b = _array(x), _values(other)
    return bool(np.all(np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)))


def equal(x: Tensor, other: Any) -> bool:
    """Whether ``x`` and ``other`` have the same shape and elements, as PyTorch's ``equal``."""
    a, b = _array(x), _values(other)
    return a.shape == b.shape and bool(np.array_equal(a, b))


def is_nonzero(x: Tensor) -> bool:
    array = _array(x)
    if array.size != 1:
        raise located_error(f"Boolean value of Tensor with {'no values' if array.size == 0 else 'more than one value'} "
                            "is ambiguous")
    return bool(array.reshape(()) != 0)


def _values(other: Any) -> np.ndarray:
    array = _array(other) if isinstance(other, Tensor) else np.asarray(other)
    if array is None:
        raise located_error("comparing an eager tensor with a traced one: their values exist at different times; "
                            "compare inside the traced function with isclose/eq and return the result")
    return array


__all__ = ["Histogram", "allclose", "argument_values", "bincount", "concrete_array", "eager_with_mask", "histc", "histogram", "equal", "is_eager", "is_nonzero", "masked_rows", "masked_select", "nonzero", "repeat_by_counts", "unique", "unique_consecutive"]
