"""``Tensor.data_ptr()`` and ``untyped_storage()``: which tensors share memory, as code that checks it asks
(tied weights found by ``a.data_ptr() == b.data_ptr()``, a checkpoint writer grouping tensors by storage).

A tensor's storage is the array at the root of its view chain (``frontend/view_writes.py``): a parameter's
``.data``, an eager tensor's array. ``data_ptr`` is that array's address plus the view's storage offset
(``frontend/tensor_strides.py``) in bytes, so a parameter and its views, or one parameter tied into two modules,
answer as torch's. Unlike torch's, an eager tensor's address changes when an in-place op rebinds it to its new value
(kiln traces in-place ops as pure ones); a parameter's ``.data`` is written in place and keeps its address.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.trace import located_error


class UntypedStorage:
    """The bytes under a tensor (``torch.UntypedStorage``'s queries): ``data_ptr()``, ``nbytes()``, ``size()``."""

    def __init__(self, array: np.ndarray):
        self._array = array

    def data_ptr(self) -> int:
        return int(self._array.__array_interface__["data"][0])

    def nbytes(self) -> int:
        return int(self._array.nbytes)

    def size(self) -> int:
        return self.nbytes()

    def __len__(self) -> int:
        return self.nbytes()

    def element_size(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"UntypedStorage(nbytes={self.nbytes()}, data_ptr={self.data_ptr():#x})"


class StorageMethods:
    """``Tensor``'s storage queries; see the module docstring."""

    def untyped_storage(self) -> UntypedStorage:
        array = _root_array(self, "untyped_storage()")
        while isinstance(array.base, np.ndarray):  # NumPy's own views: the owner's memory
            array = array.base
        return UntypedStorage(array)

    def data_ptr(self) -> int:
        from kiln.frontend.tensor_strides import UNKNOWN, layout

        root = _root_array(self, "data_ptr()")
        found = layout(self)
        offset = 0 if found == UNKNOWN else found[1]
        return int(root.__array_interface__["data"][0]) + int(offset) * root.itemsize


def _root_array(tensor: Any, what: str) -> np.ndarray:
    """The array at the root of ``tensor``'s view chain, refused for a traced tensor (no memory until it runs)."""
    from kiln.frontend.eager_values import eager_array
    from kiln.frontend.module import ArrayLeaf

    root = tensor
    while root.__dict__.get("_view_of") is not None:
        root = root.__dict__["_view_of"].base
    array = np.asarray(root._data) if isinstance(root, ArrayLeaf) else eager_array(root)  # _data: no sync, no version bump
    if array is None:
        raise located_error(f"{what} of a traced tensor: it has no memory until the compiled function runs; ask it of "
                            "the eager tensor or parameter outside the trace")
    return array


__all__ = ["StorageMethods", "UntypedStorage"]
