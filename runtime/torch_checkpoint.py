"""Files written by ``torch.save`` (its zip format), read without torch: tensors become NumPy arrays, so a state_dict
trained in PyTorch loads into the same kiln model.

```python
torch.save(model.state_dict(), "best-weights.pt")          # in PyTorch
model.load_state_dict(kiln.load("best-weights.pt"))        # in kiln: kiln.load reads both formats
```

The archive's ``data.pkl`` is unpickled with an allow-list, as ``torch.load(weights_only=True)``: dicts
(``OrderedDict`` too), lists, tuples, numbers, strings and tensors (``_rebuild_tensor_v2``, ``_rebuild_parameter``
over typed storages). Anything else (a whole pickled model, a custom class) is refused by name, never run. Each
tensor is a copy of its strided window of its storage (``data/<key>``, in the archive's ``byteorder``).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from typing import IO, Any

import ml_dtypes
import numpy as np

from kiln.compiler.errors import CheckpointError

STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": ml_dtypes.bfloat16, "ComplexFloatStorage": np.complex64, "ComplexDoubleStorage": np.complex128,
}
"""torch's typed storages kiln reads, by the NumPy dtype of their elements (complex ones load as complex arrays, which a
complex parameter's ``load_state_dict`` takes)."""


def is_torch_archive(source: str | IO[bytes]) -> bool:
    """Whether ``source`` is a zip holding a ``<name>/data.pkl``, as ``torch.save`` writes (a kiln checkpoint holds none)."""
    try:
        if not zipfile.is_zipfile(source):
            return False
        with zipfile.ZipFile(source) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    finally:
        if not isinstance(source, str):
            source.seek(0)


def load_torch_archive(source: str | IO[bytes], path: str) -> Any:
    """The object ``torch.save`` wrote to ``source``, with its tensors as NumPy arrays."""
    try:
        with zipfile.ZipFile(source) as archive:
            (pickled,) = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            prefix = pickled[: -len("data.pkl")]
            names = set(archive.namelist())
            order = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
            return _Unpickler(io.BytesIO(archive.read(pickled)), archive, prefix, order, path).load()
    except (pickle.UnpicklingError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is not a readable torch.save file: {error}; was it copied whole?") from None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], archive: zipfile.ZipFile, prefix: str, byteorder: str, path: str):
        super().__init__(file)
        self.archive, self.prefix, self.byteorder, self.path = archive, prefix, byteorder, path
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, requires_grad, hooks, *state: data
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise CheckpointError(
            f"{self.path} holds a pickled {module}.{name}, which kiln does not load: it reads torch.save files of tensors, "
            "dicts, lists and numbers (torch.save(model.state_dict(), f)); save the state_dict in PyTorch and load that")

    def persistent_load(self, saved_id: Any) -> np.ndarray:
        kind, dtype, key, _location, count = saved_id
        if kind != "storage":
            raise CheckpointError(f"{self.path}: unknown torch persistent id {kind!r}; only tensor storages are read")
        if key not in self.storages:
            self.storages[key] = self._storage(key, np.dtype(dtype), count)
        return self.storages[key]

    def _storage(self, key: str, dtype: np.dtype, count: int) -> np.ndarray:
        """Storage ``key``'s ``count`` elements in native byte order, read as unsigned words of the element's width
        (bfloat16, a NumPy extension dtype, swaps no bytes itself) and viewed as ``dtype``."""
        word = np.dtype(f"u{dtype.itemsize}") if dtype == ml_dtypes.bfloat16 else dtype
        raw = np.frombuffer(self.archive.read(f"{self.prefix}data/{key}"), dtype=word.newbyteorder("<" if self.byteorder == "little" else ">"))
        if raw.size != count:
            raise CheckpointError(f"{self.path}: storage {key} holds {raw.size} elements, its header says {count}")
        return raw.astype(word).view(dtype)


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *ignored: Any) -> np.ndarray:
    """``storage[offset:]`` viewed with torch's element strides, copied."""
    window = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=tuple(s * storage.itemsize for s in stride))
    return np.array(window)


__all__ = ["is_torch_archive", "load_torch_archive"]
