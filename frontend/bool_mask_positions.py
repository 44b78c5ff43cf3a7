"""A bool mask among other index items (``logits[:, mask] = -np.inf``, Whisper's ``detect_language``), read and
written as PyTorch's: a mask covering ``k`` dims stands for its true positions, ``k`` integer index arrays
(``mask.nonzero(as_tuple=True)``), which ``advanced_indexing.py`` then reads and writes. This needs the mask's values:
eager, a constant, or (in a ``kiln.compile`` trace) computed from the inputs, specialized and guarded
(``frontend/value_guards.py``); any other mask stays as it is (refused, with the indexing error)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.index_bounds_checks import IndexOutOfBoundsError
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.tensor import Tensor


def bool_masks_as_positions(x: Tensor, index: Any) -> Any:
    """``index`` (a tuple) with each known bool mask replaced by its true positions; else ``index`` as it is."""
    if not isinstance(index, tuple) or not any(_is_mask(item) for item in index):
        return index
    items: list[Any] = []
    for item in index:
        if not _is_mask(item):
            items.append(item)
            continue
        known = _known_mask(item)
        if known is None or Ellipsis in index:
            return index
        _check_mask_shape(x, known, _axis_of(items))
        items.extend(np.nonzero(known))
    return tuple(items)


def _is_mask(item: Any) -> bool:
    if isinstance(item, Tensor):
        return item.dtype is DType.bool and item.ndim > 0
    return isinstance(item, np.ndarray) and item.dtype == np.bool_ and item.ndim > 0


def _known_mask(item: Any) -> np.ndarray | None:
    from kiln.frontend.tensor_value_dependent import known_mask  # lazily: it builds on the Tensor

    known = known_mask(item)
    return None if known is None else np.asarray(known, bool)


def _axis_of(items_before: list[Any]) -> int:
    """The dim of ``x`` the next item indexes: every item before covers one dim, except None (none)."""
    return sum(item is not None for item in items_before)


def _check_mask_shape(x: Tensor, mask: np.ndarray, axis: int) -> None:
    """PyTorch's IndexError for a mask whose shape is not that of the dims it covers."""
    covered = tuple(x.shape[axis:axis + mask.ndim])
    for k, (size, dim) in enumerate(zip(mask.shape, covered)):
        if isinstance(dim, int) and size != dim:
            raise located(IndexOutOfBoundsError, f"The shape of the mask {list(mask.shape)} at index {k} does not match "
                                                 f"the shape of the indexed tensor {list(x.shape)} at index {axis + k}")
    if len(covered) < mask.ndim:
        raise located(IndexOutOfBoundsError, f"too many indices for tensor of dimension {x.ndim}")
