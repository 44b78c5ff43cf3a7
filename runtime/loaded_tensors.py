"""What ``kiln.load`` hands back: eager tensors where ``torch.load`` gives tensors, and its ``map_location`` rule.

```python
sd = kiln.load("best-weights.pt", map_location="cpu")   # a torch.save file or kiln's own
sd["fc.weight"].float().shape, sd["fc.weight"].numel()  # kiln Tensors (eager, no grad), as torch.load's
ckpt["epoch"]                                           # numbers, strings, dicts, lists and tuples stay as saved
```

A loaded array becomes an eager tensor holding it (not copied: tensors cut from one storage still share it, as torch
restores tied weights); a saved ``nn.Parameter`` becomes a ``Parameter``; a complex array a complex tensor. The
checkpoint readers (``runtime/checkpoint.py``, ``runtime/torch_checkpoint.py``) call ``loaded_tensor`` on each array
they rebuild, so the tree's other values, and the identity of a tensor saved twice, stay as the file has them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from kiln.compiler.errors import CheckpointError
from kiln.compiler.ir.types import is_float_array_dtype

StorageMap = Callable[[np.ndarray, str], np.ndarray]
"""``(storage, location) -> storage``: what ``map_location`` does to each storage as it is read."""


def loaded_tensor(array: np.ndarray, parameter: bool | None = None) -> Any:
    """``array`` as kiln's eager tensor; ``parameter`` (its ``requires_grad``) makes it a ``Parameter``, as a pickled
    ``nn.Parameter`` loads in torch. An integer one, which kiln's ``Parameter`` cannot hold, stays a plain tensor."""
    from kiln.frontend.module import Parameter  # lazily: the runtime builds on the frontend
    from kiln.frontend.tensor import eager_tensor
    import kiln

    array = np.asarray(array)
    if parameter is not None and (array.dtype.kind == "c" or is_float_array_dtype(array.dtype)):
        return Parameter(array, requires_grad=parameter)
    if array.dtype.kind == "c":
        return kiln.tensor(array)  # a pair of real tensors (frontend/complex_tensor.py): a copy
    return eager_tensor(array)


def storage_map(map_location: Any) -> StorageMap | None:
    """``torch.load``'s ``map_location``, checked: None, a device name (``"cpu"``, ``"cuda:0"``), a device
    (``kiln.device``, ``torch.device``), a dict of location tags, or ``fn(storage, location)``. kiln's tensors live
    on the host whatever the device (the backend places them), so only the callable changes anything: it sees each
    storage as a 1-d tensor with its location tag (``"cpu"``, ``"cuda:0"``), and what it returns is the storage
    (None keeps it, as torch's default)."""
    if map_location is None or isinstance(map_location, str) or hasattr(map_location, "type") and not callable(map_location):
        _check_device(map_location, "map_location")
        return None
    if isinstance(map_location, Mapping):
        for tag, target in map_location.items():
            _check_device(tag, f"map_location's key {tag!r}")
            _check_device(target, f"map_location[{tag!r}]")
        return None
    if callable(map_location):
        return lambda storage, location: _mapped(map_location, storage, location)
    raise CheckpointError(f"kiln.load: map_location={map_location!r} is a {type(map_location).__name__}; pass a device "
                          "name ('cpu'), a device, a dict of location tags ({'cuda:0': 'cpu'}) or fn(storage, location), "
                          "as torch.load takes")


def _check_device(name: Any, where: str) -> None:
    from kiln.frontend.tensor_device import device  # lazily: the runtime builds on the frontend

    if name is None:
        return
    try:
        device(str(name) if not isinstance(name, str) else name)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"kiln.load: {where} is not a device: {error}") from None


def _mapped(function: Callable[..., Any], storage: np.ndarray, location: str) -> np.ndarray:
    result = function(loaded_tensor(storage), location)
    if result is None:
        return storage
    array = np.asarray(result)
    if array.shape != storage.shape or array.dtype != storage.dtype:
        raise CheckpointError(f"kiln.load: map_location({location!r}) returned a {array.dtype} storage of shape "
                              f"{array.shape} for a {storage.dtype} one of {storage.shape}; return the storage it was "
                              "given (lambda storage, location: storage)")
    return array


__all__ = ["StorageMap", "loaded_tensor", "storage_map"]
