"""torch.save's legacy format, read and written without torch: every file PyTorch wrote before 1.6 (older pretrained
weights), and what ``torch.save(obj, f, _use_new_zipfile_serialization=False)`` still writes.

```python
state = kiln.load("resnet50-19c8e357.pth")                                  # a pre-1.6 file: read as a zip one is
kiln.save(model.state_dict(), "old.pth", _use_new_zipfile_serialization=False)   # for a PyTorch older than 1.6
```

The file is five pickles and the raw storages after them: torch's magic number, its protocol version (1001), a dict
of the writer's ``sys_info``, the object itself (tensors as in the zip format, a storage's persistent id
``("storage", torch.FloatStorage, key, location, numel, view)``), the sorted storage keys; then for each key, its
element count (8 bytes) and its elements, little-endian whatever the machine. The object comes before its storages,
so reading unpickles twice: once to learn each storage's dtype and size (no tensor is made), then, with the storages
read, for real (a ``weights_only=False`` pickle's own code then runs twice). ``mmap`` needs the zip format, as torch's.
"""

from __future__ import annotations

import pickle
import struct
import sys
from typing import IO, Any, BinaryIO, Callable

import numpy as np

from kiln.compiler.errors import CheckpointError
from kiln.runtime.loaded_tensors import StorageMap
from kiln.runtime.torch_checkpoint import Tensor, TorchUnpickler

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
SYS_INFO = {"protocol_version": PROTOCOL_VERSION, "little_endian": sys.byteorder == "little",
            "type_sizes": {"short": struct.calcsize("=h"), "int": struct.calcsize("=i"), "long": struct.calcsize("=l")}}
"""What torch's legacy writer records about itself (only ``protocol_version`` is read back)."""


class _PlainUnpickler(pickle.Unpickler):
    """For the header's numbers, dicts and the key list: no global at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a legacy torch file's header holds no {module}.{name}")


def is_legacy_torch_file(source: str | IO[bytes]) -> bool:
    """Whether ``source`` starts with torch's legacy magic number."""
    file = open(source, "rb") if isinstance(source, str) else source
    try:
        return _PlainUnpickler(file).load() == MAGIC_NUMBER
    except Exception:  # any other content: not this format
        return False
    finally:
        file.close() if isinstance(source, str) else file.seek(0)


def load_legacy_torch_file(source: str | IO[bytes], path: str, *, weights_only: bool = True,
                           map_storage: StorageMap | None = None, tensor: Tensor, numpy_scalars: bool = False) -> Any:
    """The object in the legacy file ``source``, its tensors made by ``tensor`` (see the module docstring);
    ``numpy_scalars`` as ``load_torch_archive``'s."""
    file = open(source, "rb") if isinstance(source, str) else source
    try:
        return _load(file, path, (weights_only, numpy_scalars), map_storage, tensor)
    except (pickle.UnpicklingError, ValueError, KeyError, TypeError, EOFError, struct.error) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path} is not a readable torch.save file (legacy format): {error}; was it copied whole?") from None
    finally:
        if isinstance(source, str):
            file.close()


def _load(file: IO[bytes], path: str, weights_only: tuple[bool, bool], map_storage: StorageMap | None, tensor: Tensor) -> Any:
    header = [_PlainUnpickler(file).load() for _ in range(3)]
    if header[1] != PROTOCOL_VERSION:
        raise CheckpointError(f"{path}: torch legacy protocol version {header[1]!r}, kiln reads {PROTOCOL_VERSION}")
    start = file.tell()
    sizes = _unpickled(file, path, weights_only, {}, None, lambda array, parameter: None).sizes
    keys = [_text(key) for key in _PlainUnpickler(file).load()]
    storages = {key: _read_storage(file, key, *sizes[key], path) for key in keys}
    file.seek(start)
    return _unpickled(file, path, weights_only, storages, map_storage, tensor).result


def _unpickled(file: IO[bytes], path: str, weights_only: tuple[bool, bool], storages: dict[str, np.ndarray],
               map_storage: StorageMap | None, tensor: Tensor) -> "_LegacyUnpickler":
    """``weights_only``: the unpickler's ``weights_only`` and ``numpy_scalars``."""
    unpickler = _LegacyUnpickler(file, path, storages)
    (unpickler.weights_only, unpickler.numpy_scalars), unpickler.map_storage, unpickler.tensor = weights_only, map_storage, tensor
    unpickler.result = unpickler.load()
    return unpickler


class _LegacyUnpickler(TorchUnpickler):
    """The zip format's unpickler over storages already read (``storages``), or, before they are, noting each one's
    dtype and element count in ``sizes`` and handing out empty stand-ins."""

    def __init__(self, file: IO[bytes], path: str, storages: dict[str, np.ndarray]):
        super().__init__(file, None, "", "little", path)
        self.read, self.sizes = storages, {}

    def persistent_load(self, saved_id: Any) -> np.ndarray:
        kind, storage_class, key, location, count, view = saved_id
        if kind != "storage":
            raise CheckpointError(f"{self.path}: unknown torch persistent id {kind!r}; only tensor storages are read")
        key = _text(key)
        self.sizes.setdefault(key, (np.dtype(storage_class), int(count)))
        if key not in self.storages:
            storage = self.read.get(key)
            storage = np.empty(count, storage_class) if storage is None else storage
            self.storages[key] = storage if self.map_storage is None else self.map_storage(storage, _text(location))
        if view is None:
            return self.storages[key]
        view_key, offset, size = view  # a storage view (PyTorch before 0.4)
        return self.storages.setdefault(_text(view_key), self.storages[key][offset:offset + size])


def _text(key: Any) -> str:
    return key.decode("ascii") if isinstance(key, bytes) else str(key)


def _read_storage(file: IO[bytes], key: str, dtype: np.dtype, count: int, path: str) -> np.ndarray:
    """Storage ``key``'s record: its element count, then its little-endian elements, read into a native array."""
    (saved,) = struct.unpack("<q", file.read(8))
    if saved != count:
        raise CheckpointError(f"{path}: storage {key} holds {saved} elements, its pickle says {count}")
    word = np.dtype(f"u{dtype.itemsize}") if dtype.kind == "V" or dtype.name == "bfloat16" else dtype
    elements = np.empty(count, word.newbyteorder("<"))
    if file.readinto(memoryview(elements.view(np.uint8))) != elements.nbytes:
        raise CheckpointError(f"{path}: storage {key} ends early; the file is truncated")
    return elements.astype(word.newbyteorder("="), copy=False).view(dtype)


def legacy_writer(tree: Any, protocol: int = 2) -> Callable[[BinaryIO], None]:
    """``write(file)`` writing ``torch.save(tree, file, _use_new_zipfile_serialization=False)``'s bytes (see the module
    docstring); the tree is pickled first, so ``CheckpointError`` comes before any file is touched."""
    from kiln.runtime.torch_checkpoint_writer import Storages, pickled_tree  # lazily: the writer imports the readers

    storages = Storages()
    pickled = pickled_tree(tree, storages, protocol=protocol, legacy=True)
    by_key = {storage.key: storage.elements for storage in storages.saved}

    def write(file: BinaryIO) -> None:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, SYS_INFO):
            pickle.dump(header, file, protocol=protocol)
        file.write(pickled)
        pickle.dump(sorted(by_key), file, protocol=protocol)
        for key in sorted(by_key):
            elements = by_key[key]
            file.write(struct.pack("<q", elements.size))
            little = elements if sys.byteorder == "little" or elements.itemsize == 1 else elements.byteswap()
            file.write(memoryview(little.view(np.uint8)))

    return write


def write_legacy_torch_file(file: BinaryIO, tree: Any, protocol: int = 2) -> None:
    """``torch.save(tree, file, _use_new_zipfile_serialization=False)``."""
    legacy_writer(tree, protocol)(file)


__all__ = ["MAGIC_NUMBER", "is_legacy_torch_file", "legacy_writer", "load_legacy_torch_file", "write_legacy_torch_file"]
