"""``x[index] = value`` as pure ops: the value padded out to ``x``'s shape, chosen where a constant mask marks the box.

Basic indices (ints, slices with a positive step, ``None``, ``...``) select a box with a stride per axis. The value
is broadcast to the selection's shape (as PyTorch broadcasts it), padded to ``x``'s shape (interior padding fills a
step's gaps) and chosen by a mask of the box, so the gradient reaches ``x`` outside the box and the value inside it,
as PyTorch's. A bool mask (``x[x < 0] = 0``, of ``x``'s shape or of its leading dims) is one ``where``; with one
value per True element, a traced mask gathers them at its ``cumsum - 1`` first. Integer
index arrays over the leading dims (``x[range(n), y] = v``, ``x[rows, cols] = v``, ``x[idx] = v``) scatter through
``index_put``, as PyTorch's; mixed with slices, ints or None, through their flat positions (advanced_indexing.py).

```
x[:, 1:4:2] = v      ->   %m = "tensor.constant"() {value = [[F, T, F, T, F]]}    (a 1 x 5 mask of the box)
  (x: Nx5)               %p = "tensor.pad"(broadcast(v, Nx2)) {low = [0, 1], high = [0, 1], interior = [0, 1]}
                         %x.1 = "tensor.where"(%m, %p, %x)
```
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from kiln.compiler.ir.types import DType, Dim
from kiln.frontend.eager_values import eager_array, eager_leaf
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.index_bounds_checks import out_of_bounds, too_many_indices
from kiln.frontend.torch_dtypes import cast_array


def assigned(x: Tensor, index: Any, value: Any) -> Tensor:
    """``x`` with ``x[index] = value`` applied, out of place."""
    from kiln.frontend.functional_indexing import uint8_as_mask  # lazily: indexing reads through this module

    from kiln.frontend.bool_mask_positions import bool_masks_as_positions  # lazily: it builds on the Tensor

    index = uint8_as_mask(index)
    if isinstance(index, Tensor) and index.dtype is DType.bool:
        return masked_assignment(x, index, value)
    index = bool_masks_as_positions(x, index)
    traced_mask = traced_mask_among_basic(x, index, value)
    if traced_mask is not None:
        return traced_mask
    advanced = advanced_indices(x, index)
    if advanced is not None:
        return x.index_put(advanced, value_of(x, value))
    from kiln.frontend.advanced_indexing import mixed_advanced_assignment  # lazily: it reads through this module

    mixed = mixed_advanced_assignment(x, index, value)
    if mixed is not None:
        return mixed
    if isinstance(index, Tensor):
        raise located_error(f"x[index] = value with a {index.dtype} index tensor: index with integers or a bool mask")
    selections, order = basic_selections(x, index)
    source = value_of(x, value)
    if all(selection is None for selection in selections):
        return broadcast_value(source, tuple(x.shape))
    if any(selection is not None and selection.count == 0 for selection in selections):
        return x
    box = box_shaped(source, selections, order, x)
    return apply("tensor.where", box_mask(x, selections), placed(box, selections, x), x)


def advanced_indices(x: Tensor, index: Any) -> tuple[Tensor, ...] | None:
    """The integer index tensors of an advanced index over the leading dims, followed only by whole axes: ``x[rows, cols]
    = v``, ``x[range(n), y] = v``, ``x[idx] = v`` (lists, ranges, arrays, integer tensors; ints among them broadcast).
    None for any other index. The assignment is ``index_put``'s (a scatter), as PyTorch's; a read gathers."""
    items = list(index) if isinstance(index, tuple) else [index]
    while items and (items[-1] is Ellipsis or (isinstance(items[-1], slice) and items[-1] == slice(None))):
        items.pop()
    if not any(_is_index_array(item) for item in items):
        return None
    if not all(_is_index_array(item) or isinstance(item, (int, np.integer)) and not isinstance(item, bool) for item in items):
        return None
    if len(items) > x.ndim:
        raise too_many_indices(x, items)
    return tuple(_index_tensor(x, axis, item) for axis, item in enumerate(items))


def _index_tensor(x: Tensor, axis: int, item: Any) -> Tensor:
    """``item`` as an integer tensor, its values checked against ``x``'s axis where they are known now (a list, a range,
    an array, an eager tensor): PyTorch's IndexError, naming the user's line."""
    known = eager_array(item) if isinstance(item, Tensor) else np.asarray(item, np.int64)
    size = x.shape[axis]
    if known is not None and isinstance(size, int) and known.size:
        outside = known[(known < -size) | (known >= size)]
        if outside.size:
            raise out_of_bounds(int(outside.flat[0]), axis, size)
    return item if isinstance(item, Tensor) else apply("tensor.constant", value=np.asarray(item, np.int64))


def _is_index_array(item: Any) -> bool:
    if isinstance(item, Tensor):
        return not item.dtype.is_float and item.dtype is not DType.bool
    return isinstance(item, (list, range, np.ndarray)) and np.asarray(item).dtype.kind in "iu"


class Selection(NamedTuple):
    """What an index picks on one axis of ``x``: ``count`` elements from ``start``, ``step`` apart."""

    start: int
    count: int
    step: int
    by_int: bool
    """An int index: the axis is left out of the selection's shape."""


NEW_AXIS = -1
"""In a selection's axis order: an axis that an index of None inserts."""


def basic_selections(x: Tensor, index: Any) -> tuple[list[Selection | None], list[int]]:
    """Per axis of ``x`` its ``Selection``, or None for the whole axis; and the selection's axes in order, as axes of
    ``x`` or ``NEW_AXIS`` (an int-indexed axis is not among them)."""
    items = _expanded_items(x, index)
    selections: list[Selection | None] = []
    order: list[int] = []
    for item in items:
        if item is None:
            order.append(NEW_AXIS)
            continue
        selection = axis_selection(x, len(selections), item)
        if selection is None or not selection.by_int:
            order.append(len(selections))
        selections.append(selection)
    return selections, order


def _expanded_items(x: Tensor, index: Any) -> list[Any]:
    """The index as one item per axis of ``x`` (plus the Nones): the ellipsis and the missing trailing axes filled."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(isinstance(item, (list, np.ndarray, Tensor)) for item in items):
        raise located_error("x[index] = value takes ints, slices, None and ..., one bool mask tensor, or integer index "
                            "arrays (lists, arrays, integer tensors)")
    if sum(item is Ellipsis for item in items) > 1:
        raise located_error("an index can have only one ellipsis (...)")
    axes = sum(1 for item in items if item is not None and item is not Ellipsis)
    if axes > x.ndim:
        raise too_many_indices(x, items)
    if Ellipsis in items:
        at = items.index(Ellipsis)
        return items[:at] + [slice(None)] * (x.ndim - axes) + items[at + 1:]
    return items + [slice(None)] * (x.ndim - axes)


def axis_selection(x: Tensor, axis: int, item: Any) -> Selection | None:
    size = x.shape[axis]
    if isinstance(item, slice) and item == slice(None):
        return None
    if isinstance(size, str):
        raise located_error(f"cannot index the symbolic dim {size} of {x.type} with {item!r} in an assignment")
    if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
        if not -size <= item < size:
            raise out_of_bounds(item, axis, size)
        return Selection(int(item) % size, 1, 1, True)
    if not isinstance(item, slice):
        raise located_error(f"unsupported index {item!r} in an assignment: use ints, slices, None, ... or a bool mask tensor")
    start, stop, step = item.indices(size)
    if step < 1:
        raise located_error(f"slice steps must be positive, got {step}")
    return Selection(start, len(range(start, stop, step)), step, False)


def value_of(x: Tensor, value: Any) -> Tensor:
    """The assigned value as a tensor of ``x``'s dtype (a number rounded as torch rounds it: ``cast_array``)."""
    if isinstance(value, Tensor):
        return value if value.dtype is x.dtype else value.to(x.dtype)
    return apply("tensor.constant", value=cast_array(value, x.dtype))


def broadcast_value(source: Tensor, shape: tuple[Dim, ...]) -> Tensor:
    """``source`` broadcast to ``shape``, after dropping leading size-1 axes beyond its rank (PyTorch allows them)."""
    extra = source.ndim - len(shape)
    if extra > 0 and all(d == 1 for d in source.shape[:extra]):
        source = apply("tensor.squeeze", source, axes=tuple(range(extra)))
    if source.shape == shape:
        return source
    if source.ndim > len(shape) or not _broadcasts(source.shape, shape):
        raise located_error(f"x[index] = value: a value of shape {source.type} does not broadcast to the selection's shape {shape}")
    return source.broadcast_to(shape)


def _broadcasts(source: tuple[Dim, ...], target: tuple[Dim, ...]) -> bool:
    return all(s == 1 or s == t for s, t in zip(reversed(source), reversed(target)))


def box_shaped(source: Tensor, selections: list[Selection | None], order: list[int], x: Tensor) -> Tensor:
    """The value broadcast to the selection's shape, then with one axis per axis of ``x`` (size 1 where an int picks)."""
    shape = tuple(1 if axis == NEW_AXIS else x.shape[axis] if selections[axis] is None else selections[axis].count
                  for axis in order)
    value = broadcast_value(source, shape)
    inserted = tuple(i for i, axis in enumerate(order) if axis == NEW_AXIS)
    value = apply("tensor.squeeze", value, axes=inserted) if inserted else value
    picked = tuple(axis for axis, selection in enumerate(selections) if selection is not None and selection.by_int)
    return apply("tensor.expand_dims", value, axes=picked) if picked else value


def placed(box: Tensor, selections: list[Selection | None], x: Tensor) -> Tensor:
    """The box padded out to ``x``'s shape, its elements at the selected places (the rest is masked off)."""
    low, high, interior = [], [], []
    for size, selection in zip(x.shape, selections):
        if selection is None:
            low.append(0), high.append(0), interior.append(0)
            continue
        last = selection.start + (selection.count - 1) * selection.step
        low.append(selection.start), high.append(size - 1 - last), interior.append(selection.step - 1)
    return apply("tensor.pad", box, low=tuple(low), high=tuple(high), interior=tuple(interior))


def box_mask(x: Tensor, selections: list[Selection | None]) -> Tensor:
    """A bool constant, True on the selected box: size 1 on whole axes, which it broadcasts along."""
    mask = np.ones(tuple(1 if s is None else size for size, s in zip(x.shape, selections)), dtype=bool)
    for axis, selection in enumerate(selections):
        if selection is not None:
            picked = np.zeros(mask.shape[axis], dtype=bool)
            picked[selection.start:selection.start + selection.count * selection.step:selection.step] = True
            mask &= picked.reshape((-1,) + (1,) * (x.ndim - axis - 1))
    return apply("tensor.constant", value=mask)


def masked_assignment(x: Tensor, mask: Tensor, value: Any) -> Tensor:
    """``x[mask] = value`` for a bool ``mask`` of ``x``'s shape or its leading dims: a scalar, or a value that
    broadcasts to the trailing dims (each selected row gets it)."""
    if mask.shape != x.shape[:mask.ndim]:
        raise located_error(f"x[mask] = value: the mask {mask.type} must have the shape of {x.type} or of its leading dims")
    from kiln.frontend.pending_masked_rows import PendingMaskedRows, assigned_under_same_mask  # lazily: builds on Tensor

    if isinstance(value, PendingMaskedRows):  # a[mask] = b[mask], traced
        return assigned_under_same_mask(x, mask, value)
    leading, source = mask.ndim, value_of(x, value)
    if source.ndim > x.ndim - leading and source.ndim > 0 and source.shape != (1,):
        known = eager_array(mask)
        if known is not None:  # one value per selected element (x[m] = y[m]): eagerly the positions are known
            return x.index_put(tuple(eager_leaf(np.asarray(i, np.int64)) for i in np.nonzero(known)), source)
        return traced_mask_values(x, mask, source)
    if leading < x.ndim:
        mask = apply("tensor.expand_dims", mask, axes=tuple(range(leading, x.ndim)))
    return apply("tensor.where", mask, source, x)


def traced_mask_among_basic(x: Tensor, index: Any, value: Any) -> Tensor | None:
    """``x[..., mask, ...] = value`` for one bool mask among basic items whose values are only known when the graph
    runs (HashNeRF's ``outputs_flat[~keep_mask, -1] = 0``): the basic assignment with the mask's dims taken whole, kept
    where the mask (along its dims) is True, one ``where``. None for other indices, and for a value with one entry per
    True element (its rows need the mask's positions)."""
    items = list(index) if isinstance(index, tuple) else []
    masks = [at for at, item in enumerate(items) if isinstance(item, Tensor) and item.dtype is DType.bool and item.ndim]
    if len(masks) != 1 or Ellipsis in items[:masks[0]]:
        return None
    at, mask = masks[0], items[masks[0]]
    if any(isinstance(item, (list, range, np.ndarray, Tensor)) for item in items[:at] + items[at + 1:]):
        return None
    from kiln.frontend.bool_mask_positions import _check_mask_shape  # lazily: it builds on the Tensor

    axis = sum(item is not None for item in items[:at])
    if all(isinstance(size, int) for size in mask.shape):
        _check_mask_shape(x, np.empty(tuple(mask.shape), bool), axis)
    whole = tuple(items[:at]) + (slice(None),) * mask.ndim + tuple(items[at + 1:])
    _, order = basic_selections(x, whole)
    after = len(order) - order.index(axis) - mask.ndim  # the selection's dims after the mask's one
    source = value_of(x, value)
    while source.ndim > after and source.shape[0] == 1:
        source = apply("tensor.squeeze", source, axes=(0,))
    if source.ndim > after:
        return None
    within = apply("tensor.expand_dims", mask, axes=tuple(range(axis))) if axis else mask
    trailing = x.ndim - axis - mask.ndim
    within = apply("tensor.expand_dims", within, axes=tuple(range(x.ndim - trailing, x.ndim))) if trailing else within
    return apply("tensor.where", within, assigned(x, whole, source), x)


def traced_mask_values(x: Tensor, mask: Tensor, source: Tensor) -> Tensor:
    """``x[mask] = values`` for a mask only known when the graph runs: the k-th True position (row-major) takes row k
    of ``values``, gathered at ``cumsum(mask) - 1``, then one ``where``. ``values`` must have one row per True element,
    as PyTorch checks; the graph cannot check the count, so a short ``values`` repeats its last row."""
    trailing = tuple(x.shape[mask.ndim:])
    if source.ndim != 1 + len(trailing) or not _broadcasts(tuple(source.shape[1:]), trailing):
        raise located_error(f"x[mask] = value: a value of shape {source.type} is neither a scalar, one value per "
                            f"selected row ({trailing}) nor one row per selected element (K, {', '.join(map(str, trailing))})")
    rows = source.broadcast_to((source.shape[0],) + trailing) if source.shape[1:] != trailing else source
    if rows.shape[0] == 0:  # nothing selected: a zero row to gather keeps the values in the graph (zero gradient)
        rows = apply("tensor.concat", rows, rows.new_zeros((1,) + trailing), axis=0)
    flat = mask.reshape(-1)
    position = (flat.long().cumsum(0) - 1).clamp(min=0)
    gathered = rows.index_select(0, position).reshape(tuple(mask.shape) + trailing)
    if mask.ndim < x.ndim:
        mask = apply("tensor.expand_dims", mask, axes=tuple(range(mask.ndim, x.ndim)))
    return apply("tensor.where", mask, gathered, x)


def disjoint(x: Tensor, first: Any, second: Any) -> bool:
    """Whether basic indices ``first`` and ``second`` of ``x`` select no element in common (False when unsure)."""
    if isinstance(first, Tensor) or isinstance(second, Tensor):
        return False
    try:
        (a, _), (b, _) = basic_selections(x, first), basic_selections(x, second)
    except Exception:
        return False
    return any(s is not None and t is not None and not _positions(s) & _positions(t) for s, t in zip(a, b))


def _positions(selection: Selection) -> set[int]:
    return set(range(selection.start, selection.start + selection.count * selection.step, selection.step))
