"""Checkpoints: ``kiln.save``/``kiln.load``, written atomically; PyTorch's format, or kiln's NPZ for ``.npz`` paths.

```python
kiln.save(model.state_dict(), "model.pt")   # PyTorch's format: torch.load("model.pt") reads it, as kiln.load does
kiln.save("run.npz", {"train": step.state_dict(), "scheduler": scheduler.state_dict()})   # kiln's NPZ format
state = kiln.load("run.npz")                # either format, and files torch.save wrote
```

Which format: a path ending in ``.npz`` gets kiln's NPZ format; any other path, and a binary file object, gets the zip
format ``torch.save`` writes (``runtime/torch_checkpoint_writer.py``), so a state_dict trained in kiln deploys with
PyTorch; a whole module (``kiln.save(model, f)``) gets kiln's format whatever the path (torch could not rebuild kiln's
classes); ``_use_new_zipfile_serialization=False`` writes torch's legacy format (``runtime/torch_legacy_format.py``).
``kiln.load`` tells the formats apart by their content.

kiln's NPZ format: arrays are NPZ members (``allow_pickle=False`` both ways, so loading runs no
code); the tree around them (dicts, lists, tuples, numbers, strings, None) is
JSON in the member ``__kiln__``. Python floats round-trip exactly. A bfloat16
array, which NPZ has no type for, is stored as its 16-bit words and marked
``"dtype": "bfloat16"`` in the tree, so it loads as bfloat16, bit for bit. ``load`` gives each array as
an eager tensor, as ``torch.load`` (a saved ``Parameter`` as a ``Parameter``: ``"parameter"`` marks it); one array
saved twice (tied weights) is one member, loaded as tensors sharing it; kiln's own resume reads arrays
(``load_arrays``). Either format is written to a temporary name in the same folder, flushed to disk and
renamed over the target, so a failed save leaves the previous checkpoint as
it was.
"""

from __future__ import annotations

import errno
import functools
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
from kiln.runtime.saved_tensors import tensor_array
from kiln.runtime.torch_checkpoint import Tensor, is_torch_archive, load_torch_archive
from kiln.runtime.torch_checkpoint_writer import archive_name, torch_archive
from kiln.runtime.torch_legacy_format import is_legacy_torch_file, legacy_writer, load_legacy_torch_file
from kiln.runtime.zip_mmap import mapped_npy

FORMAT = "kiln-checkpoint"
VERSION = 1
META = "__kiln__"
SCALARS = (bool, int, float, str, type(None))
BFLOAT16 = DType.bf16.numpy


def save(path: str | os.PathLike | BinaryIO, tree: Any, pickle_module: Any = None, pickle_protocol: int = 2,
         _use_new_zipfile_serialization: bool = True, _disable_byteorder_record: bool = False) -> None:
    """Write ``tree`` to ``path`` atomically: PyTorch's format, or kiln's NPZ where the path ends in ``.npz`` or
    ``tree`` is a whole module (see the module docstring). PyTorch's order, ``kiln.save(model.state_dict(), path)`` as
    ``torch.save(obj, f)``, works too: a path second and a tree first are swapped. ``path`` may be a binary file
    (``with open(p, "wb") as f: kiln.save(model, f)``), written in place; a module is saved whole
    (``runtime/model_pickle.py``). torch.save's options apply to its format: ``pickle_protocol``,
    ``_use_new_zipfile_serialization=False`` (the legacy format, ``runtime/torch_legacy_format.py``),
    ``_disable_byteorder_record``; ``pickle_module`` may only be ``pickle``."""
    if _is_path(tree) and not _is_path(path):
        path, tree = tree, path
    _check_pickle_module(pickle_module, "kiln.save")
    if is_module(tree) or not _is_file(path) and os.fspath(path).lower().endswith(".npz"):
        write = functools.partial(np.savez, allow_pickle=False, **_npz_members(tree))
    elif not _use_new_zipfile_serialization:
        write = legacy_writer(tree, pickle_protocol)
    else:
        write = functools.partial(torch_archive(tree, pickle_protocol).write, byteorder=not _disable_byteorder_record,
                                  name="archive" if _is_file(path) else archive_name(path))
    if _is_file(path):
        write(path)
    else:
        _write_atomically(os.fspath(path), write)


def _check_pickle_module(pickle_module: Any, where: str) -> None:
    if pickle_module is not None and pickle_module is not pickle:
        raise CheckpointError(f"{where}: pickle_module={pickle_module!r}; kiln pickles with Python's pickle only, "
                              "leave pickle_module out")


def _npz_members(tree: Any) -> dict[str, np.ndarray]:
    """kiln's NPZ members for ``tree``: its arrays and the JSON skeleton around them (a module pickled whole)."""
    arrays: dict[str, np.ndarray] = {}
    whole = is_module(tree)
    if whole:
        arrays[MODULE_MEMBER] = pickled(tree)
    skeleton = None if whole else _flatten(tree, arrays, "state")
    meta = json.dumps({"format": FORMAT, "version": VERSION, "tree": skeleton, **({"module": MODULE_MEMBER} if whole else {})})
    arrays[META] = np.frombuffer(meta.encode(), dtype=np.uint8)
    return arrays


def _is_path(node: Any) -> bool:
    return isinstance(node, (str, os.PathLike)) or _is_file(node)


def _is_file(node: Any) -> bool:
    return hasattr(node, "write") or hasattr(node, "read")


def load(path: str | os.PathLike | BinaryIO, map_location: Any = None, pickle_module: Any = None, *,
         weights_only: bool | None = None, mmap: bool | None = None) -> Any:
    """The tree saved at ``path`` (a path or a binary file), as ``torch.load`` gives it: each array an eager kiln
    tensor (a saved ``nn.Parameter`` a ``Parameter``; ``runtime/loaded_tensors.py``), numbers, strings, dicts, lists
    and tuples as saved. A file ``torch.save`` wrote loads too (``runtime/torch_checkpoint.py``; its legacy format,
    ``runtime/torch_legacy_format.py``); any other file raises ``CheckpointError``. ``weights_only`` (torch's default, True) refuses what would run code: a whole saved module,
    a torch file's custom classes; ``map_location`` takes torch's values (a device, a dict, ``fn(storage, location)``);
    ``mmap=True`` maps the arrays from the file (a path) instead of reading them."""
    _check_pickle_module(pickle_module, "kiln.load")
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
    return _read(os.fspath(path), os.fspath(path), _array, numpy_scalars=True)


def loads(content: bytes | memoryview, name: str) -> Any:
    """The tree in ``content``, a checkpoint file's bytes (read on one rank and broadcast), with NumPy arrays, as
    ``load_arrays``; ``name`` says which file in errors."""
    return _read(io.BytesIO(content), name, _array, numpy_scalars=True)


def _array(array: np.ndarray, parameter: bool | None) -> np.ndarray:
    return array


def _read(source: str | io.BytesIO, path: str, tensor: Tensor, weights_only: bool = True,
          map_storage: StorageMap | None = None, mmap: bool = False, numpy_scalars: bool = False) -> Any:
    """``numpy_scalars``: for kiln's own resume, whose trees the NPZ format gives back with their NumPy scalars, a
    torch-format file's (pickled, as torch.save pickles them) load too (``torch_checkpoint.NUMPY_SCALARS``)."""
    if is_torch_archive(source):  # torch.save's format (runtime/torch_checkpoint.py)
        return load_torch_archive(source, path, weights_only=weights_only, map_storage=map_storage, mmap=mmap, tensor=tensor,
                                  numpy_scalars=numpy_scalars)
    if is_legacy_torch_file(source):  # torch.save's before PyTorch 1.6 (runtime/torch_legacy_format.py)
        if mmap:
            raise CheckpointError(f"kiln.load: {path} is in torch.save's legacy format, and mmap can only be used with "
                                  "files saved with torch.save(_use_new_zipfile_serialization=True); save it again "
                                  "(kiln.save(kiln.load(f), f)) to map it")
        return load_legacy_torch_file(source, path, weights_only=weights_only, map_storage=map_storage, tensor=tensor,
                                      numpy_scalars=numpy_scalars)
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
    node, parameter = tensor_array(node, where)
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


def _write_atomically(path: str, write: Callable[[BinaryIO], None]) -> None:
    """``write`` into a temporary file beside ``path``, flushed to disk, then renamed over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    _check_target(path, folder)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _sync_folder(folder)


def _check_target(path: str, folder: str) -> None:
    """torch.save's checks, before anything is written: the folder exists (its 'Parent directory ... does not
    exist.'), and the path is not a folder. The OSError kinds stay, so ``except OSError`` still catches them."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, f"kiln.save: {folder} is a file, not a folder; save beside it", path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"kiln.save: Parent directory {folder} does not exist; create it first "
                                f"(os.makedirs({folder!r}, exist_ok=True))", path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "kiln.save: the path is a folder; give the file's name in it "
                                "(os.path.join(folder, 'model.pt'))", path)


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
