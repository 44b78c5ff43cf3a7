"""Checkpoints: a tree of dicts, lists and arrays in one NPZ file, written atomically.

```python
kiln.save("run.npz", {"train": step.state_dict(), "scheduler": scheduler.state_dict()})
state = kiln.load("run.npz")
```

Arrays are NPZ members (``allow_pickle=False`` both ways, so loading runs no
code); the tree around them (dicts, lists, tuples, numbers, strings, None) is
JSON in the member ``__kiln__``. Python floats round-trip exactly. A bfloat16
array, which NPZ has no type for, is stored as its 16-bit words and marked
``"dtype": "bfloat16"`` in the tree, so it loads as bfloat16, bit for bit. The file
is written to a temporary name in the same folder, flushed to disk and
renamed over the target, so a failed save leaves the previous checkpoint as
it was.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import zipfile
import zlib
from typing import Any, BinaryIO, Mapping

import numpy as np

from kiln.compiler.errors import CheckpointError
from kiln.compiler.ir.types import DType
from kiln.runtime.model_pickle import MEMBER as MODULE_MEMBER, is_module, pickled, unpickled
from kiln.runtime.torch_checkpoint import is_torch_archive, load_torch_archive

FORMAT = "kiln-checkpoint"
VERSION = 1
META = "__kiln__"
SCALARS = (bool, int, float, str, type(None))
BFLOAT16 = DType.bf16.numpy


def save(path: str | os.PathLike | BinaryIO, tree: Any) -> None:
    """Write ``tree`` to ``path`` (an ``.npz`` file) atomically. PyTorch's order, ``kiln.save(model.state_dict(), path)``
    as ``torch.save(obj, f)``, works too: a path second and a tree first are swapped. ``path`` may be a binary file
    (``with open(p, "wb") as f: kiln.save(model, f)``), written in place; a module is saved whole
    (``runtime/model_pickle.py``)."""
    if _is_path(tree) and not _is_path(path):
        path, tree = tree, path
    arrays: dict[str, np.ndarray] = {}
    whole = is_module(tree)
    if whole:
        arrays[MODULE_MEMBER] = pickled(tree)
    skeleton = None if whole else _flatten(tree, arrays, "state")
    meta = json.dumps({"format": FORMAT, "version": VERSION, "tree": skeleton, **({"module": MODULE_MEMBER} if whole else {})})
    arrays[META] = np.frombuffer(meta.encode(), dtype=np.uint8)
    if _is_file(path):
        np.savez(path, allow_pickle=False, **arrays)
    else:
        _write_atomically(os.fspath(path), arrays)


def _is_path(node: Any) -> bool:
    return isinstance(node, (str, os.PathLike)) or _is_file(node)


def _is_file(node: Any) -> bool:
    return hasattr(node, "write") or hasattr(node, "read")


def load(path: str | os.PathLike | BinaryIO, map_location: Any = None, weights_only: bool = True) -> Any:
    """The tree saved at ``path`` (a path or a binary file); a file ``torch.save`` wrote loads too, its tensors as arrays
    (``runtime/torch_checkpoint.py``); any other file raises ``CheckpointError``. A whole saved module loads only with
    ``weights_only=False`` (``torch.load``'s rule: unpickling runs code); ``map_location`` is accepted and changes
    nothing (the backend places arrays)."""
    if _is_file(path):
        name = str(getattr(path, "name", "the file object"))
        return _read(io.BytesIO(path.read()), name, weights_only)
    return _read(os.fspath(path), os.fspath(path), weights_only)


def loads(content: bytes | memoryview, name: str) -> Any:
    """The tree in ``content``, a checkpoint file's bytes (read on one rank and broadcast); ``name`` says which file in errors."""
    return _read(io.BytesIO(content), name)


def _read(source: str | io.BytesIO, path: str, weights_only: bool = True) -> Any:
    if is_torch_archive(source):
        return load_torch_archive(source, path)  # torch.save's format (runtime/torch_checkpoint.py)
    try:
        with np.load(source, allow_pickle=False) as members:
            meta = json.loads(bytes(members[META]).decode())
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}, expected {FORMAT!r} version {VERSION}")
            if "module" in meta:
                return unpickled(members, path, weights_only)
            return _unflatten(meta["tree"], members)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, NotImplementedError, zlib.error, struct.error) as error:
        # a damaged zip fails in many ways (a bad CRC, an unknown compression method, a short header): one message for all
        raise CheckpointError(
            f"{path} is not a readable kiln checkpoint: {error}; was it written by kiln.save (or step.save) and copied whole?"
        ) from None


def _flatten(node: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    """The JSON skeleton of ``node``; arrays (an eager tensor's too) go to ``arrays`` under fresh names."""
    node = _tensor_array(node, where)
    if isinstance(node, (np.ndarray, np.generic)):
        name, array = f"a{len(arrays)}", np.asarray(node)
        if array.dtype.hasobject:
            raise CheckpointError(f"cannot save {where}: object arrays would need pickle; convert it to a numeric array")
        if array.dtype == BFLOAT16:
            arrays[name] = array.view(np.uint16)
            return {"array": name, "dtype": "bfloat16"}
        arrays[name] = array
        return {"array": name}
    if isinstance(node, SCALARS):
        return {"value": node}
    if isinstance(node, Mapping):
        for key in node:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise CheckpointError(f"cannot save {where}: dict key {key!r} is not a str or int")
        return {"dict": [[key, _flatten(value, arrays, f"{where}[{key!r}]")] for key, value in node.items()]}
    if isinstance(node, (list, tuple)):
        items = [_flatten(item, arrays, f"{where}[{i}]") for i, item in enumerate(node)]
        return {"tuple" if isinstance(node, tuple) else "list": items}
    raise CheckpointError(f"cannot save {where}: a {type(node).__name__} is not an array, number, string, list or dict")


def _tensor_array(node: Any, where: str) -> Any:
    """An eager tensor's array (``kiln.save({"x": x}, f)``, as ``torch.save``); anything else as it is."""
    from kiln.frontend.eager_values import eager_array  # lazily: this file imports nothing of the frontend at load
    from kiln.frontend.tensor import Tensor

    if not isinstance(node, Tensor):
        return node
    array = eager_array(node)
    if array is None:
        raise CheckpointError(f"cannot save {where}: a traced tensor ({node.type}) has no values; save outside the traced "
                              "function (the model's state_dict(), or the compiled function's outputs)")
    return array


def _unflatten(node: Mapping[str, Any], members: Any) -> Any:
    if "array" in node:
        array = members[node["array"]]
        return array.view(BFLOAT16) if node.get("dtype") == "bfloat16" else array
    (kind, content), = node.items()
    if kind == "value":
        return content
    if kind == "dict":
        return {key: _unflatten(value, members) for key, value in content}
    items = [_unflatten(item, members) for item in content]
    return tuple(items) if kind == "tuple" else items


def _write_atomically(path: str, arrays: dict[str, np.ndarray]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, allow_pickle=False, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _sync_folder(folder)


def _sync_folder(folder: str) -> None:
    """Make the rename itself durable where the platform allows opening folders."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
