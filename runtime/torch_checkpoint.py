"""Files written by ``torch.save`` (its zip format), read without torch: tensors become kiln tensors (NumPy arrays for
kiln's own readers), so a state_dict trained in PyTorch loads into the same kiln model.

```python
torch.save(model.state_dict(), "best-weights.pt")          # in PyTorch
model.load_state_dict(kiln.load("best-weights.pt"))        # in kiln: kiln.load reads both formats
```

The archive's ``data.pkl`` is unpickled with torch 2.13's ``weights_only=True`` allow-list: dicts (``OrderedDict``,
``Counter``), lists, tuples, sets, numbers, strings, bytes, ``torch.Size``/``dtype``/``device`` (as kiln's) and tensors
(``_rebuild_tensor_v2``, ``_rebuild_parameter`` over typed storages). Anything else (a custom class, a NumPy array) is
refused by name with torch's ``UnpicklingError``, never run; ``weights_only=False`` imports and runs it, as torch's,
except torch's own classes (a whole pickled ``nn.Module``), which kiln cannot rebuild. Each tensor is its strided window
of its storage (``data/<key>``, in the archive's ``byteorder``), a view: tensors of one storage share it, as in torch.
With ``mmap`` the storages are mapped from the file rather than read (``runtime/zip_mmap.py``).
"""

from __future__ import annotations

import _codecs
import collections
import io
import pickle
import zipfile
from typing import IO, Any, Callable

import ml_dtypes
import numpy as np

from kiln.compiler.errors import CheckpointError
from kiln.compiler.ir.types import DType
from kiln.runtime.loaded_tensors import StorageMap, loaded_tensor
from kiln.runtime.safe_globals import user_safe_global
from kiln.runtime.zip_mmap import mapped_words

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


class WeightsOnlyError(CheckpointError, pickle.UnpicklingError):
    """A file ``weights_only=True`` refuses to unpickle: ``torch.load``'s ``pickle.UnpicklingError``, and kiln's
    ``CheckpointError``, so either ``except`` catches it."""


Tensor = Callable[[np.ndarray, "bool | None"], Any]
"""``(array, requires_grad of a saved Parameter or None) -> what the reader hands back``: ``loaded_tensor``, or the
array itself for kiln's own readers."""


def load_torch_archive(source: str | IO[bytes], path: str, *, weights_only: bool = True, map_storage: StorageMap | None = None,
                       mmap: bool = False, tensor: Tensor = loaded_tensor, numpy_scalars: bool = False) -> Any:
    """The object ``torch.save`` wrote to ``source``, its tensors made by ``tensor``; ``mmap`` maps the storages from
    the file (``source`` must then be a path, as torch's); ``numpy_scalars`` lets ``weights_only`` take NumPy scalars
    (``NUMPY_SCALARS``)."""
    try:
        with zipfile.ZipFile(source) as archive:
            (pickled,) = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            prefix = pickled[: -len("data.pkl")]
            names = set(archive.namelist())
            order = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
            unpickler = TorchUnpickler(io.BytesIO(archive.read(pickled)), archive, prefix, order, path)
            unpickler.weights_only, unpickler.map_storage, unpickler.tensor = weights_only, map_storage, tensor
            unpickler.numpy_scalars = numpy_scalars
            unpickler.mapped_from = source if mmap and isinstance(source, str) else None
            return unpickler.load()
    except (pickle.UnpicklingError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path} is not a readable torch.save file: {error}; was it copied whole?") from None


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict, ("collections", "Counter"): collections.Counter,
    ("builtins", "set"): set, ("builtins", "complex"): complex, ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _codecs.encode,
}
"""The plain globals torch 2.13's ``weights_only`` unpickler allows (``torch._weights_only_unpickler``)."""
NUMPY_SCALARS = {("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"), ("numpy", "dtype")}
"""What a NumPy scalar pickles as (NumPy 2's and 1's names): torch's allow-list leaves it out, kiln's own resume takes
it (a file kiln.save wrote from ``step.state_dict()``, DINO's ``np.float64`` lr in ``param_groups``, which kiln's NPZ
format keeps natively); rebuilding one runs no code of the file's."""


class TorchUnpickler(pickle.Unpickler):
    """torch.save's pickle with torch 2.13's ``weights_only`` rules, its tensors windows of the archive's storages
    (``runtime/torch_legacy_format.py`` reads the legacy format's through it too)."""

    def __init__(self, file: IO[bytes], archive: zipfile.ZipFile, prefix: str, byteorder: str, path: str):
        super().__init__(file)
        self.archive, self.prefix, self.byteorder, self.path = archive, prefix, byteorder, path
        self.storages: dict[str, np.ndarray] = {}
        self.weights_only, self.map_storage, self.tensor, self.mapped_from = True, None, loaded_tensor, None
        self.numpy_scalars = False

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # torch pickles with protocol 2 (Python 2's names)
        if (module, name) in ALLOWED:
            return ALLOWED[module, name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self.rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return self.rebuild_parameter
        if (module, name) == ("torch._utils", "_rebuild_parameter_with_state"):
            return self.rebuild_parameter_with_state
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "torch":
            known = _torch_value(name)
            if known is not None:
                return known
        if self.numpy_scalars and (module, name) in NUMPY_SCALARS:
            return super().find_class(module, name)
        user_allowed = user_safe_global(module, name) if module.split(".")[0] != "torch" else None
        if user_allowed is not None:  # kiln.serialization.add_safe_globals
            return user_allowed
        if self.weights_only:
            raise WeightsOnlyError(
                f"Weights only load failed. {self.path} holds a pickled {module}.{name}, which weights_only=True refuses, "
                "as torch.load does: it reads tensors, dicts, lists, numbers and strings (torch.save(model.state_dict(), "
                "f)); if you trust the file, kiln.load(f, weights_only=False) runs the pickle's code, as "
                f"torch.load(f, weights_only=False). WeightsUnpickler error: Unsupported global: GLOBAL {module}.{name} "
                "was not an allowed global by default.")
        if module.split(".")[0] == "torch":
            raise CheckpointError(
                f"{self.path} holds a pickled {module}.{name}, a PyTorch object kiln cannot rebuild (a whole pickled "
                "torch model is PyTorch's classes); in PyTorch, torch.save(model.state_dict(), f), and load that")
        return super().find_class(module, name)

    def rebuild_tensor(self, storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                       requires_grad: bool = False, *ignored: Any) -> Any:
        """A tensor saved with ``requires_grad=True`` (a leaf, not a Parameter) loads as one, as torch.load's; kiln's
        own readers, which take arrays, ignore it."""
        tensor = self.tensor(_strided_window(storage, offset, size, stride, self.path), None)
        return tensor.requires_grad_() if requires_grad and hasattr(tensor, "requires_grad_") else tensor

    def rebuild_parameter(self, data: Any, requires_grad: bool, *ignored: Any) -> Any:
        return self.tensor(np.asarray(data), bool(requires_grad))

    def rebuild_parameter_with_state(self, data: Any, requires_grad: bool, hooks: Any, state: Any) -> Any:
        """A Parameter torch saved with attributes of the user's (``p.lr_mult = 0.5``): the Parameter, its attributes
        set again, as ``torch._utils._set_obj_state`` does (kiln's own readers, which take arrays, drop them)."""
        parameter = self.rebuild_parameter(data, requires_grad)
        attributes, slots = state if isinstance(state, tuple) else (state, None)
        if isinstance(parameter, np.ndarray):
            return parameter
        for name, value in {**(attributes or {}), **(slots or {})}.items():
            setattr(parameter, name, value)
        return parameter

    def persistent_load(self, saved_id: Any) -> np.ndarray:
        kind, dtype, key, location, count = saved_id
        if kind != "storage":
            raise CheckpointError(f"{self.path}: unknown torch persistent id {kind!r}; only tensor storages are read")
        if key not in self.storages:
            storage = self._storage(key, np.dtype(dtype), count)
            self.storages[key] = storage if self.map_storage is None else self.map_storage(storage, str(location))
        return self.storages[key]

    def _storage(self, key: str, dtype: np.dtype, count: int) -> np.ndarray:
        """Storage ``key``'s ``count`` elements in native byte order, read as unsigned words of the element's width
        (bfloat16, a NumPy extension dtype, swaps no bytes itself) and viewed as ``dtype``; mapped where asked and
        the file's byte order is the machine's."""
        word = np.dtype(f"u{dtype.itemsize}") if dtype == ml_dtypes.bfloat16 else dtype
        member = f"{self.prefix}data/{key}"
        native = (self.byteorder == "little") == (np.little_endian is True)
        if self.mapped_from is not None and native:
            mapped = mapped_words(self.mapped_from, self.archive.getinfo(member), word, count)
            if mapped is not None:
                return mapped.view(dtype)
        raw = np.frombuffer(self.archive.read(member), dtype=word.newbyteorder("<" if self.byteorder == "little" else ">"))
        if raw.size != count:
            raise CheckpointError(f"{self.path}: storage {key} holds {raw.size} elements, its header says {count}")
        return raw.astype(word).view(dtype)


def _torch_value(name: str) -> Any:
    """``torch.Size``, ``torch.device`` and the dtypes (``torch.float16``) as kiln's, or None."""
    import kiln  # lazily: kiln's facade imports this module

    if name in ("Size", "device"):
        return getattr(kiln, name)
    value = getattr(kiln, name, None)
    return value if isinstance(value, DType) else None


def _strided_window(storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], path: str) -> np.ndarray:
    """``storage[offset:]`` viewed with torch's element strides (not copied), after checking the window lies inside it."""
    size, stride = tuple(size), tuple(stride)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if offset < 0 or any(s < 0 for s in stride) or len(size) != len(stride) or last >= storage.size:
        raise CheckpointError(f"{path}: a tensor of size {size}, stride {stride} at offset {offset} reaches past its "
                              f"storage of {storage.size} elements; the file is damaged")
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride))


__all__ = ["TorchUnpickler", "WeightsOnlyError", "is_torch_archive", "load_torch_archive"]
