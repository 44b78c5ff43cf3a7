"""``Tensor.resize_`` and ``resize_as_``: the tensor takes a new shape in place, as PyTorch's.

PyTorch keeps the storage's elements in row-major order and grows it with uninitialised memory; here the first
``min(old, new)`` elements keep their values and the rest are zeros (one valid "uninitialised"), so code that writes
the tensor after resizing it (eval_knn.py's ``retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()``) gets
PyTorch's values. As PyTorch, a tensor that requires grad refuses; kiln also refuses a view, a parameter, and a tensor
from outside a ``kiln.compile`` trace (its write-back keeps the shape), saying what to write instead.
"""

from __future__ import annotations

import math
from typing import Any

from kiln.frontend.eager_values import ARRAYS
from kiln.frontend.trace import TraceContext, located_error
from kiln.frontend.version_counter import counted_writes


def resized(tensor: Any, sizes: tuple[Any, ...], method: str = "resize_") -> Any:
    """Make ``tensor`` hold its values in the new shape ``sizes`` (ints, or one tuple, list or Size of them)."""
    shape = tuple(int(size) for size in (sizes[0] if len(sizes) == 1 and not isinstance(sizes[0], int) else sizes))
    _check_resizable(tensor, shape, method)
    flat = tensor.clone().reshape(-1)  # a copy (no gradient: checked): no view of ``tensor`` is made
    count, held = math.prod(shape), math.prod(tensor.shape)
    if count > held:
        flat = _grown(flat, count - held)
    result = flat[:count].reshape(shape).clone()
    if TraceContext.current().eager:
        with counted_writes(tensor):
            tensor._value = result.value
    else:
        tensor._value = result.value
    return tensor


def _grown(flat: Any, extra: int) -> Any:
    from kiln.frontend.torch_functions import cat, zeros  # lazily: the functions build on the tensor

    return cat([flat, zeros(extra, dtype=flat.dtype)])


def _check_resizable(tensor: Any, shape: tuple[int, ...], method: str) -> None:
    from kiln.frontend.module import ArrayLeaf

    if any(size < 0 for size in shape):
        raise located_error(f"{method}: Trying to create tensor with negative dimension {min(shape)}: {list(shape)}")
    if tensor.requires_grad:
        raise located_error("cannot resize variables that require grad")
    if isinstance(tensor, ArrayLeaf) or any(key in tensor.__dict__ for key in ("_view_of", "_indexed_from")) \
            or _has_live_views(tensor):
        raise located_error(f"{method} of a parameter or of a tensor sharing storage with views: kiln resizes only a "
                            f"tensor that owns its values; make a new one instead (x = x.new_zeros({list(shape)}))")
    if not TraceContext.current().eager and tensor.__dict__.get("_value") in ARRAYS:
        raise located_error(f"{method} in a kiln.compile trace of a tensor from outside it: its write-back keeps its "
                            f"shape {list(tensor.shape)}; make a new tensor inside the function instead")


def _has_live_views(tensor: Any) -> bool:
    """Whether a view of ``tensor`` is alive (its family holds members other than it)."""
    family = tensor.__dict__.get("_family")
    return family is not None and any(member is not tensor for member in list(family.members.values()))


__all__ = ["resized"]
