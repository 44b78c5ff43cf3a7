"""Eager arrays shared with NumPy, as PyTorch's CPU storage is: in-place writes land in them.

``torch.from_numpy(a)``, ``torch.as_tensor(a)`` (same dtype) and ``a = t.numpy()`` share memory: ``t.add_(1)``,
``t[0] = 5``, ``t.copy_(s)``, an optimizer's update are seen in ``a``, and a write to ``a`` in ``t``. RL replay buffers
and data loaders rely on it. An eager in-place write in kiln makes a new value with a new array
(``tensor_inplace.rebind``); the old value keeps its array, which a backward may still read. For an array shared with
NumPy, the write's values are copied into the shared array instead, and the old value gets a copy of the old contents:

```python
a = np.zeros(3, np.float32); t = kiln.from_numpy(a)     # a is shared (its owning array is registered)
t.add_(1)              # ARRAYS[t's old value] = a.copy(); a[...] = the sum; ARRAYS[t's new value] = a
```

Arrays never handed to NumPy keep the cheaper rebinding: no one outside kiln can see the difference.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.frontend.eager_values import ARRAYS

_SHARED: dict[int, "weakref.ref[np.ndarray]"] = {}
"""The arrays owning memory NumPy shares with eager tensors, by ``id`` (an array is not hashable), held weakly."""


def shared(array: np.ndarray) -> np.ndarray:
    """Mark ``array``'s memory as seen by NumPy (``from_numpy``'s argument, ``t.numpy()``'s result); returns it."""
    owner = _owner(array)
    key = id(owner)
    if key not in _SHARED:
        try:
            _SHARED[key] = weakref.ref(owner, lambda _, key=key: _SHARED.pop(key, None))
        except TypeError:  # an object without weak references (a memoryview's exporter): nothing to land in
            pass
    return array


READ_ONLY_WARNING = (
    "The given NumPy array is not writable, and PyTorch does not support non-writable tensors. This means writing to "
    "this tensor will result in undefined behavior. You may want to copy the array to protect its data or make it "
    "writable before converting it to a tensor. This type of warning will be suppressed for the rest of this program.")
"""torch's warning (once a process) for ``from_numpy``/``as_tensor`` of a read-only array; kiln's in-place writes of
such a tensor give it a new array of its own, leaving the read-only one as it was."""


def warn_if_read_only(array: np.ndarray) -> None:
    """torch's ``READ_ONLY_WARNING`` for an array NumPy will not let a tensor write."""
    if not array.flags.writeable:
        from kiln.frontend.warn_once import warn_once  # lazily: it reads the trace's user location

        warn_once(READ_ONLY_WARNING)


def is_shared(array: np.ndarray) -> bool:
    """Whether NumPy shares ``array``'s memory with the user (``shared``)."""
    owner = _owner(array)
    known = _SHARED.get(id(owner))
    return known is not None and known() is owner


def _owner(array: Any) -> Any:
    """The object owning ``array``'s memory, up NumPy's chain of ``base``s."""
    while isinstance(getattr(array, "base", None), np.ndarray):
        array = array.base
    return array


def land_in_storage(tensor: Any, old: Value | None, new: Value) -> None:
    """After an eager in-place write rebound ``tensor`` from ``old`` to ``new``: if ``old``'s array is shared with
    NumPy (and ``new``'s fits it), copy the new values into it and make it ``new``'s array, the old values kept for
    ``old`` and for the tensors sharing its storage (a backward may read them, as PyTorch's saved copy)."""
    if not _SHARED or old is None:
        return
    storage, fresh = ARRAYS.get(old), ARRAYS.get(new)
    if storage is None or fresh is None or fresh is storage or not is_shared(storage):
        return
    if fresh.shape != storage.shape or fresh.dtype != storage.dtype or not storage.flags.writeable:
        return
    _keep_old_values(tensor, old, storage)
    np.copyto(storage, fresh)
    ARRAYS[new] = storage


def view_in_storage(view_value: Value, base_value: Value | None, index: Any) -> None:
    """After a write through ``base[index]`` landed in ``base``'s shared array: the view's new value reads that array
    through NumPy's view (``index`` basic: ints, slices, ``None``, ``...``), so ``v.numpy()`` shares it as torch's."""
    if not _SHARED or base_value is None:  # nothing shared, or a parameter written in a trace
        return
    storage, fresh = ARRAYS.get(base_value), ARRAYS.get(view_value)
    if storage is None or fresh is None or not is_shared(storage):
        return
    items = index if isinstance(index, tuple) else (index,)
    if not all(item is None or item is Ellipsis or isinstance(item, (int, slice)) for item in items):
        return
    seen = storage[index]
    if seen.shape == fresh.shape and seen.dtype == fresh.dtype and np.array_equal(seen, fresh, equal_nan=True):
        ARRAYS[view_value] = seen


def _keep_old_values(tensor: Any, old: Value, storage: np.ndarray) -> None:
    """Give ``old`` and the values of the tensors sharing ``tensor``'s storage (views whose arrays are views of
    ``storage``) their own copies before ``storage`` is written."""
    from kiln.frontend.version_counter import _sharing  # lazily: version counting builds on the in-place writes

    values = [old] + [member.__dict__.get("_value") for member in _sharing(tensor) if member is not tensor]
    for value in values:
        array = ARRAYS.get(value) if value is not None else None
        if array is not None and np.may_share_memory(array, storage):
            ARRAYS[value] = array.copy()


__all__ = ["READ_ONLY_WARNING", "is_shared", "land_in_storage", "shared", "view_in_storage", "warn_if_read_only"]
