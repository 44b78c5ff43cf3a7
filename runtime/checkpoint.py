"""Checkpoints: a tree of dicts, lists and arrays in one NPZ file, written atomically.

```python
kiln.save("run.npz", {"train": step.state_dict(), "scheduler": scheduler.state_dict()})
state = kiln.load("run.npz")
```

Arrays are NPZ members (``allow_pickle=False`` both ways, so loading runs no
code); the tree around them (dicts, lists, tuples, numbers, strings, None) is
JSON in the member ``__kiln__``. Python floats round-trip exactly. A bfloat16
array, which NPZ has no type for, is stored as its 16-bit words and marked
``"dtype": "bfloat16"`` in the tree, so it loads as bfloat16, bit for bit. ``load`` gives each array as
an eager tensor, as ``torch.load`` (a saved ``Parameter`` as a ``Parameter``: ``"parameter"`` marks it); one array
saved twice (tied weights) is one member, loaded as tensors sharing it; kiln's own resume reads arrays
(``load_arrays``). The file
is written to a temporary name in the same folder, flushed to disk and
renamed over the target, so a failed save leaves the previous checkpoint as
it was.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tempfile
import zipfile
import zlib
from collections import OrderedDict
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from kiln.compiler.errors import CheckpointError
from kiln.compiler.ir.types import DType
from kiln.runtime.model_pickle import MEMBER as MODULE_MEMBER, is_module, pickled, unpickled
from kiln.runtime.pickled_leaves import pickled_leaf, unpickled_leaf
from kiln.runtime.loaded_tensors import StorageMap, loaded_tensor, storage_map
from kiln.runtime.torch_checkpoint import Tensor, is_torch_archive, load_torch_archive
from kiln.runtime.zip_mmap import mapped_npy

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


def load(path: str | os.PathLike | BinaryIO, map_location: Any = None, pickle_module: Any = None, *,
         weights_only: bool | None = None, mmap: bool | None = None) -> Any:
    """The tree saved at ``path`` (a path or a binary file), as ``torch.load`` gives it: each array an eager kiln
    tensor (a saved ``nn.Parameter`` a ``Parameter``; ``runtime/loaded_tensors.py``), numbers, strings, dicts, lists
    and tuples as saved. A file ``torch.save`` wrote loads too (``runtime/torch_checkpoint.py``); any other file raises
    ``CheckpointError``. ``weights_only`` (torch's default, True) refuses what would run code: a whole saved module,
    a torch file's custom classes; ``map_location`` takes torch's values (a device, a dict, ``fn(storage, location)``);
    ``mmap=True`` maps the arrays from the file (a path) instead of reading them."""
    if pickle_module is not None and pickle_module is not pickle:
        raise CheckpointError(f"kiln.load: pickle_module={pickle_module!r}; kiln unpickles with Python's pickle only, "
                              "leave pickle_module out")
    if mmap and _is_file(path):
        raise CheckpointError("kiln.load: mmap=True needs a file path, not a file object (torch.load's rule: "
                              "'f must be a file path in order to use the mmap argument')")
    options = {"weights_only": weights_only is not False, "map_storage": storage_map(map_location), "mmap": bool(mmap)}
    if _is_file(path):
        name = str(getattr(path, "name", "the file object"))
        return _read(io.BytesIO(path.read()), name, loaded_tensor, **options)
    return _read(os.fspath(path), os.fspath(path), loaded_tensor, **options)


def load_arrays(path: str | os.PathLike) -> Any:
    """The tree saved at ``path`` with NumPy arrays where ``load`` gives tensors: for kiln's own readers (a training
    step's or trainer's resume), which take the arrays as they are."""
    return _read(os.fspath(path), os.fspath(path), _array)


def loads(content: bytes | memoryview, name: str) -> Any:
    """The tree in ``content``, a checkpoint file's bytes (read on one rank and broadcast), with NumPy arrays, as
    ``load_arrays``; ``name`` says which file in errors."""
    return _read(io.BytesIO(content), name, _array)


def _array(array: np.ndarray, parameter: bool | None) -> np.ndarray:
    return array


def _read(source: str | io.BytesIO, path: str, tensor: Tensor, weights_only: bool = True,
          map_storage: StorageMap | None = None, mmap: bool = False) -> Any:
    if is_torch_archive(source):  # torch.save's format (runtime/torch_checkpoint.py)
        return load_torch_archive(source, path, weights_only=weights_only, map_storage=map_storage, mmap=mmap, tensor=tensor)
    try:
        with np.load(source, allow_pickle=False) as members:
            meta = json.loads(bytes(members[META]).decode())
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}, expected {FORMAT!r} version {VERSION}")
            if "module" in meta:
                return unpickled(members, path, weights_only)
            read = _member_reader(members, source if mmap and isinstance(source, str) else None)
            if map_storage is not None:  # each array is its own storage, on the host
                return _unflatten(meta["tree"], read, lambda array, parameter: tensor(map_storage(array, "cpu"), parameter),
                                  lambda name: unpickled_leaf(read(name), weights_only, path))
            return _unflatten(meta["tree"], read, tensor, lambda name: unpickled_leaf(read(name), weights_only, path))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, NotImplementedError, zlib.error, struct.error) as error:
        # a damaged zip fails in many ways (a bad CRC, an unknown compression method, a short header): one message for all
        raise CheckpointError(
            f"{path} is not a readable kiln checkpoint: {error}; was it written by kiln.save (or step.save) and copied whole?"
        ) from None


def _member_reader(members: Any, mapped_from: str | None) -> Callable[[str], np.ndarray]:
    """``name -> array``, each member read once (tensors saved from one array share it again), mapped from the file at
    ``mapped_from`` where given (``runtime/zip_mmap.py``)."""
    infos = {}
    if mapped_from is not None:
        with zipfile.ZipFile(mapped_from) as archive:
            infos = {info.filename: info for info in archive.infolist()}
    read: dict[str, np.ndarray] = {}

    def member(name: str) -> np.ndarray:
        if name not in read:
            info = infos.get(f"{name}.npy")
            mapped = None if info is None else mapped_npy(mapped_from, info)
            read[name] = members[name] if mapped is None else mapped
        return read[name]

    return member


def _flatten(node: Any, arrays: dict[str, np.ndarray], where: str, saved: dict[int, tuple[str, Any]] | None = None) -> Any:
    """The JSON skeleton of ``node``; arrays (an eager tensor's, a parameter's too) go to ``arrays`` under fresh names,
    one array met twice (tied weights) under one name, which loads as tensors sharing it."""
    saved = {} if saved is None else saved
    node, parameter = _tensor_array(node, where)
    if isinstance(node, (np.ndarray, np.generic)):
        entry = {"array": _array_name(node, arrays, where, saved)}
        if node.dtype == BFLOAT16:
            entry["dtype"] = "bfloat16"
        if isinstance(node, np.generic):  # a NumPy scalar (DINO's lr_schedule[it] in param_groups) loads as one
            entry["scalar"] = True
        if parameter is not None:
            entry["parameter"] = parameter
        return entry
    if isinstance(node, SCALARS):
        return {"value": node}
    if isinstance(node, Mapping):
        for key in node:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise CheckpointError(f"cannot save {where}: dict key {key!r} is not a str or int")
        kind = "ordered_dict" if isinstance(node, OrderedDict) else "dict"  # a state_dict loads as one, as torch's
        return {kind: [[key, _flatten(value, arrays, f"{where}[{key!r}]", saved)] for key, value in node.items()]}
    if isinstance(node, (list, tuple)):
        items = [_flatten(item, arrays, f"{where}[{i}]", saved) for i, item in enumerate(node)]
        return {"tuple" if isinstance(node, tuple) else "list": items}
    return pickled_leaf(node, arrays, where)  # an argparse.Namespace of hyperparameters, as torch.save pickles it


def _array_name(node: np.ndarray | np.generic, arrays: dict[str, np.ndarray], where: str, saved: dict[int, tuple[str, Any]]) -> str:
    """The member holding ``node``: the one it was already saved under, else a fresh one (``saved`` keeps each
    node alive, so its ``id`` is not reused while saving)."""
    if id(node) in saved:
        return saved[id(node)][0]
    name, array = f"a{len(arrays)}", np.asarray(node)
    if array.dtype.hasobject:
        raise CheckpointError(f"cannot save {where}: object arrays would need pickle; convert it to a numeric array")
    arrays[name] = array.view(np.uint16) if array.dtype == BFLOAT16 else array
    saved[id(node)] = (name, node)
    return name


def _tensor_array(node: Any, where: str) -> tuple[Any, bool | None]:
    """An eager tensor's array (``kiln.save({"x": x}, f)``, as ``torch.save``) and, for a ``Parameter``, its
    ``requires_grad`` (it loads as a ``Parameter``); anything else as it is, with None."""
    from kiln.frontend.complex_tensor import ComplexTensor
    from kiln.frontend.eager_values import eager_array  # lazily: this file imports nothing of the frontend at load
    from kiln.frontend.module import Parameter
    from kiln.frontend.tensor import Tensor

    if not isinstance(node, Tensor):
        return node, None
    if isinstance(node, Parameter):
        return node.data, bool(node.requires_grad)
    array = eager_array(node)
    if array is None and isinstance(node, ComplexTensor):
        return np.asarray(node), None  # a pair of real tensors (frontend/complex_tensor.py), saved as one complex array
    if array is None:
        raise CheckpointError(f"cannot save {where}: a traced tensor ({node.type}) has no values; save outside the traced "
                              "function (the model's state_dict(), or the compiled function's outputs)")
    return array, None


def _unflatten(node: Mapping[str, Any], read: Callable[[str], np.ndarray], tensor: Tensor,
               unpickle: Callable[[str], Any]) -> Any:
    if "pickled" in node:
        return unpickle(node["pickled"])
    if "array" in node:
        array = read(node["array"])
        array = array.view(BFLOAT16) if node.get("dtype") == "bfloat16" else array
        return array[()] if node.get("scalar") else tensor(array, node.get("parameter"))
    (kind, content), = node.items()
    if kind == "value":
        return content
    if kind in ("dict", "ordered_dict"):
        pairs = ((key, _unflatten(value, read, tensor, unpickle)) for key, value in content)
        return OrderedDict(pairs) if kind == "ordered_dict" else dict(pairs)
    items = [_unflatten(item, read, tensor, unpickle) for item in content]
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
