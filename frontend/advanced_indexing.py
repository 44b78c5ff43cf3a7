"""Integer index arrays anywhere among slices, ints, ``None`` and ``...``, read and written as PyTorch's.

```python
v[:, [-1]]              # nanoGPT's top-k threshold: a (B, 1) column
x[:, idx, 1:3]          # the picked rows of dim 1, sliced on dim 2
x[rows, :, cols]        # index arrays apart: their broadcast dims come first
```

PyTorch's rule (which differs from NumPy's for ints): the ints, slices and
``None`` apply first, as basic indexing; the index arrays then pick along
the axes they stand on. Their broadcast shape replaces those axes where they
stood when the arrays are adjacent, and comes first when a slice or ``None``
separates them. The picked axes move to the front and one ``take`` gathers
their flat positions (``functional_nn._gathered_rows``): a copy, as PyTorch's.
A write (``x[:, idx] = v``) reads the same index of a constant holding each
element's flat position, and scatters the value there (``index_put``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error


def mixed_advanced_index(input: Tensor, index: Any) -> Tensor | None:
    """``input[index]`` when ``index`` holds an integer index array that is not only over the leading dims, else None."""
    from kiln.frontend.functional_nn import _gathered_rows, getitem  # lazily: getitem calls this
    from kiln.frontend.tensor_setitem import _index_tensor, _is_index_array

    items = _items_with_arrays(input, index)
    if items is None:
        return None
    basic, arrays, axis = [], {}, 0
    for item in items:
        if _is_index_array(item):
            arrays[axis] = item
            basic.append(slice(None))
        else:
            basic.append(item)
        axis += not isinstance(item, (int, np.integer))
    sliced = getitem(input, tuple(basic))
    picked = sorted(arrays)
    indices = tuple(_index_tensor(sliced, axis, arrays[axis]) for axis in picked)
    if len(picked) == 1:  # one take along its axis: the other dims may be symbolic
        return apply("tensor.take", sliced, _wrapped(indices[0], sliced.shape[picked[0]]), axis=picked[0])
    rest = [axis for axis in range(sliced.ndim) if axis not in arrays]
    gathered = _gathered_rows(sliced.permute(*picked, *rest) if picked != list(range(len(picked))) else sliced, indices)
    return _placed(gathered, picked, gathered.ndim - len(rest))


def mixed_advanced_assignment(x: Tensor, index: Any, value: Any) -> Tensor | None:
    """``x`` with ``x[index] = value`` applied (``index`` as ``mixed_advanced_index`` reads it), else None: the flat
    positions the read picks scatter the value broadcast to the read's shape (``index_put``, as PyTorch's)."""
    from kiln.frontend.tensor_setitem import broadcast_value, value_of

    shape = tuple(x.shape)
    if _items_with_arrays(x, index) is None:
        return None
    if not all(isinstance(dim, int) for dim in shape):
        raise located_error(f"x[index] = value with index arrays among slices needs a static shape, got {x.type}; "
                            "index the symbolic dims with whole slices only after moving the indexed ones first")
    positions = apply("tensor.constant", value=np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape))
    picked = mixed_advanced_index(positions, index)
    source = broadcast_value(value_of(x, value), tuple(picked.shape))
    flat = x.reshape(-1).index_put((picked.reshape(-1),), source.reshape(-1))
    return flat.reshape(shape)


def _wrapped(index: Tensor, size: Any) -> Tensor:
    """``index`` with negative entries counted from the end of an axis of ``size`` (a static size)."""
    from kiln.frontend.tensor_more import _where

    if isinstance(size, int):
        return _where(index < 0, index.long() + size, index.long())
    known = _constant_value(index)
    if known is None or (known < 0).any():
        raise located_error(f"an index array on the symbolic dim {size} must hold known non-negative positions (a list "
                            "or an array), since the dim's size is not known to count negative ones from its end")
    return index.long()


def _constant_value(index: Tensor) -> np.ndarray | None:
    """The values of an index made from a list or an array (a constant op), else None."""
    from kiln.frontend.eager_values import eager_array

    op = index.value.producer
    if op is not None and op.name == "tensor.constant":
        return np.asarray(op.attrs["value"])
    return eager_array(index)


def _placed(gathered: Tensor, picked: list[int], width: int) -> Tensor:
    """The gathered dims (``width`` of them, first) moved to where adjacent index arrays stood; kept first otherwise."""
    adjacent = picked == list(range(picked[0], picked[0] + len(picked)))
    if not adjacent or picked[0] == 0:
        return gathered
    before = list(range(width, width + picked[0]))
    return gathered.permute(*before, *range(width), *range(width + picked[0], gathered.ndim))


def _items_with_arrays(input: Tensor, index: Any) -> list[Any] | None:
    """The index as a list of items with ``...`` written out, if it holds an integer index array; else None."""
    from kiln.frontend.tensor_setitem import _is_index_array

    items = _without_ellipsis(input, list(index) if isinstance(index, tuple) else [index])
    return items if items is not None and any(_is_index_array(item) for item in items) else None


def _without_ellipsis(input: Tensor, items: list[Any]) -> list[Any] | None:
    """``items`` with ``...`` written out as whole-axis slices (None if there is more than one)."""
    ellipses = [i for i, item in enumerate(items) if item is Ellipsis]
    if len(ellipses) > 1:
        return None
    if not ellipses:
        return items
    at = ellipses[0]
    fill = input.ndim - sum(1 for item in items if item is not None and item is not Ellipsis)
    return items[:at] + [slice(None)] * fill + items[at + 1:]


__all__ = ["mixed_advanced_assignment", "mixed_advanced_index"]
