"""Files ``torch.load`` reads, written without torch: PyTorch's zip serialization (torch 2.x) of a checkpoint tree.

```python
kiln.save(model.state_dict(), "model.pt")         # in kiln: any path not ending in .npz, or a binary file
model.load_state_dict(torch.load("model.pt"))     # in PyTorch, weights_only=True (its default) or False
```

The archive is the one ``torch.save`` writes: a folder named after the file (``model/``; ``archive/`` for a file object)
holding ``data.pkl`` (the tree, pickled with protocol 2), ``.format_version``, ``.storage_alignment``, ``byteorder``,
one ``data/<key>`` record per storage (its raw elements in this machine's byte order), ``version`` and
``.data/serialization_id``, each stored uncompressed and starting at a multiple of 64 bytes (so ``mmap=True`` can map the
storages, in torch and in kiln). In the pickle a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, OrderedDict())``, its storage the persistent id ``("storage", torch.FloatStorage, key, "cpu",
numel)``, and a ``Parameter`` ``torch._utils._rebuild_parameter(tensor, requires_grad, OrderedDict())``, as torch's
pickler writes them; those globals are written by name, so torch need not be installed.

Storage: a NumPy array's memory belongs to the array at the end of its chain of bases (an eager tensor's views, a
state_dict's entries, the windows ``kiln.load`` cuts from a torch file's storages). Tensors lying in one contiguous such
array are windows of one storage (offset and strides in elements), so tied weights and views load sharing it, as those
``torch.save`` writes; a tensor torch could not describe so (negative strides, another byte order, a second dtype over
the same memory) gets a storage of its own, a copy. kiln's dtypes map to torch's storages (bfloat16 to
``BFloat16Storage``, bool to ``BoolStorage``, complex64 to ``ComplexFloatStorage``); other NumPy dtypes are refused,
naming the ``.npz`` format that keeps them.

kiln's ``Parameter`` subclasses become torch's kinds: a ``Buffer`` (BatchNorm's running statistics) and a leaf made
with ``requires_grad=True`` plain tensors, a complex parameter its complex values. Everything else is pickled as
``torch.save`` pickles it: dicts (an ``OrderedDict`` with its ``_metadata``), lists, tuples, numbers, strings, None, a
NumPy scalar or an ``argparse.Namespace`` (which ``weights_only=True`` refuses to load, in torch and in kiln, as for
torch.save's own files); kiln's dtypes, ``kiln.Size`` and ``kiln.device`` as torch's. An object of kiln's own inside
the tree (``{"model": model}``) keeps kiln's pickling, tensors and all, so ``kiln.load(f, weights_only=False)``
rebuilds it. The legacy format's writer (``runtime/torch_legacy_format.py``) pickles with this pickler too.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import secrets
import struct
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from kiln.compiler.errors import CheckpointError
from kiln.compiler.ir.types import DType
from kiln.runtime.saved_tensors import tensor_array
from kiln.runtime.torch_checkpoint import STORAGE_DTYPES

ALIGNMENT = 64
"""Where each record's bytes start: a multiple of this (torch's ``.storage_alignment``)."""
FILE_FORMAT_VERSION = b"3\n"
"""The ``version`` record torch 2.x writes (its ``kProducedFileFormatVersion``)."""
STORAGE_NAMES = {np.dtype(dtype): name for name, dtype in STORAGE_DTYPES.items()}
"""NumPy dtype -> torch's storage class, the inverse of the reader's table."""
LOCAL_HEADER = 30
"""Bytes of a zip local file header before its name."""
ZIP64_EXTRA = 20
"""Bytes ``zipfile`` appends to a local header's extra field for a record it writes as zip64."""


@dataclass
class TorchArchive:
    """A tree ready to write: ``data.pkl``'s bytes and the storages it names."""

    pickled: bytes
    storages: list[Storage]

    def write(self, file: BinaryIO, name: str = "archive", byteorder: bool = True) -> None:
        """The zip ``torch.save`` writes, its records in torch's order under the folder ``name``. ``byteorder=False``
        (torch.save's ``_disable_byteorder_record=True``) moves that record after ``version``, as torch's writer
        then adds it when it closes the archive."""
        order = [("byteorder", sys.byteorder.encode())]
        records = [("data.pkl", self.pickled), (".format_version", b"1"), (".storage_alignment", str(ALIGNMENT).encode())]
        records += order if byteorder else []
        records += [(f"data/{storage.key}", storage.elements) for storage in self.storages]
        records += [("version", FILE_FORMAT_VERSION)] + ([] if byteorder else order)
        records += [(".data/serialization_id", _serialization_id())]
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            for record, content in records:
                _write_record(archive, f"{name}/{record}", content)


def torch_archive(tree: Any, protocol: int = 2) -> TorchArchive:
    """``tree`` pickled as ``torch.save`` pickles it (``pickle_protocol``: ``protocol``); ``CheckpointError``, naming
    where in the tree, for a part that cannot be saved (before any file is touched)."""
    storages = Storages()
    return TorchArchive(pickled_tree(tree, storages, protocol), storages.saved)


def write_torch_archive(file: BinaryIO, tree: Any, name: str = "archive") -> None:
    """Write ``tree`` to ``file`` as ``torch.save(tree, file)`` would."""
    torch_archive(tree).write(file, name)


def archive_name(path: str | os.PathLike) -> str:
    """The archive's folder for a file at ``path``, as torch names it: the file name without its last extension."""
    name = os.path.basename(os.fspath(path))
    stem = name[: name.rindex(".")] if "." in name else name
    return stem or "archive"


def _serialization_id() -> bytes:
    """A fresh 40-digit id, as torch writes one into every archive."""
    return f"{secrets.randbits(136) % 10**40:040d}".encode()


def _write_record(archive: zipfile.ZipFile, name: str, content: bytes | np.ndarray) -> None:
    """``content`` as an uncompressed record whose bytes start at a multiple of ``ALIGNMENT``: the local header's
    extra field (id ``FB``, as torch's) pads up to there."""
    data = memoryview(content.view(np.uint8) if isinstance(content, np.ndarray) else content)
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.file_size = data.nbytes
    zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule for a record it writes as zip64
    header = archive.start_dir + LOCAL_HEADER + len(name.encode()) + 4 + (ZIP64_EXTRA if zip64 else 0)
    padding = -header % ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", padding) + bytes(padding)
    with archive.open(info, "w", force_zip64=zip64) as record:
        record.write(data)


@dataclass(frozen=True)
class TorchGlobal:
    """A global of torch's (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``), pickled by its name."""

    module: str
    name: str

    def __call__(self, *args: Any) -> Any:
        raise TypeError(f"{self.module}.{self.name} is only named in a pickle, not called")  # save_reduce wants a callable


@functools.cache
def torch_global(module: str, name: str) -> TorchGlobal:
    """One object per name, so the pickler's memo writes each name once, as torch's does."""
    return TorchGlobal(module, name)


@dataclass(eq=False)
class Storage:
    """One ``data/<key>`` record: its elements (1-d, contiguous, native byte order) and torch's storage class."""

    key: str
    elements: np.ndarray
    name: str


@dataclass
class Storages:
    """The storages met while pickling, in order; a NumPy array owning memory is one storage however many tensors lie
    in it."""

    saved: list[Storage] = field(default_factory=list)
    by_owner: dict[int, tuple[np.ndarray, Storage]] = field(default_factory=dict)

    def window(self, array: np.ndarray, where: str) -> tuple[Storage, int, tuple[int, ...]]:
        """``(storage, offset, stride)`` of ``array``, offset and strides in elements, as ``_rebuild_tensor_v2`` takes."""
        name = storage_name(array.dtype, where)
        owner = memory_owner(array)
        place = place_in(array, owner)
        if place is not None:
            storage = self._storage_of(owner, array.dtype, name)
            if storage is not None:
                return (storage, *place)
        copy = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
        return self._new(copy.reshape(-1), name), 0, contiguous_strides(array.shape)

    def _storage_of(self, owner: np.ndarray, dtype: np.dtype, name: str) -> Storage | None:
        """The storage of ``owner``'s memory viewed as ``dtype``; None when it was saved as another dtype already
        (torch keeps one dtype per storage)."""
        if id(owner) in self.by_owner:
            storage = self.by_owner[id(owner)][1]
            return storage if storage.elements.dtype == dtype else None
        storage = self._new(owner.view(np.ndarray).reshape(-1).view(np.uint8).view(dtype), name)
        self.by_owner[id(owner)] = (owner, storage)  # kept alive, so its id is not reused while saving
        return storage

    def _new(self, elements: np.ndarray, name: str) -> Storage:
        storage = Storage(str(len(self.saved)), elements, name)
        self.saved.append(storage)
        return storage


def storage_name(dtype: np.dtype, where: str) -> str:
    """torch's storage class for ``dtype``'s elements; ``CheckpointError`` for a dtype torch's storages do not hold."""
    if dtype.hasobject:
        raise CheckpointError(f"cannot save {where}: object arrays would need pickle; convert it to a numeric array")
    name = STORAGE_NAMES.get(dtype.newbyteorder("="))
    if name is None:
        raise CheckpointError(f"cannot save {where}: a {dtype} array, which torch.save's format (float16/32/64, bfloat16, "
                              "int8/16/32/64, uint8, bool, complex64/128) does not hold; convert it (array.astype(...)) "
                              "or save to a path ending in .npz, kiln's format, which keeps it")
    return name


def memory_owner(array: np.ndarray) -> np.ndarray:
    """The array at the end of ``array``'s chain of bases (through ``as_strided``'s windows): the one owning its memory."""
    while True:
        base = array.base
        if isinstance(base, np.ndarray):
            array = base
        elif isinstance(getattr(base, "base", None), np.ndarray) and hasattr(base, "__array_interface__"):
            array = base.base  # np.lib.stride_tricks.as_strided's window over an array
        else:
            return array


def place_in(array: np.ndarray, owner: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    """``array``'s offset and strides in elements of ``owner``'s memory read as ``array``'s dtype, or None where
    torch cannot describe it so: an empty array, a non-contiguous owner, negative or unaligned strides, another byte
    order. A dimension of size 1 whose stride torch could not take (NumPy allows any there) takes its contiguous one."""
    itemsize = array.itemsize
    if array.size == 0 or not array.dtype.isnative or not owner.flags.c_contiguous or owner.nbytes % itemsize:
        return None
    start = _address(array) - _address(owner)
    spans = [(size, stride) for size, stride in zip(array.shape, array.strides) if size > 1]
    if start < 0 or start % itemsize or any(stride < 0 or stride % itemsize for _, stride in spans):
        return None
    if start + sum((size - 1) * stride for size, stride in spans) + itemsize > owner.nbytes:
        return None
    strides = tuple(stride // itemsize if size > 1 or stride >= 0 and stride % itemsize == 0 else default
                    for size, stride, default in zip(array.shape, array.strides, contiguous_strides(array.shape)))
    return start // itemsize, strides


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """torch's strides of a contiguous tensor of ``shape``, in elements (an empty dimension counts as 1)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


_TUPLE_OPCODES = {1: pickle.TUPLE1, 2: pickle.TUPLE2, 3: pickle.TUPLE3}
REBUILD_TENSOR = torch_global("torch._utils", "_rebuild_tensor_v2")
REBUILD_PARAMETER = torch_global("torch._utils", "_rebuild_parameter")


class TorchPickler(pickle._Pickler):
    """Python's pickler (the pure one: the C pickler imports each global it writes, and torch is not here) with
    torch's persistent ids for storages and torch's reductions for tensors, dtypes, ``Size`` and ``device``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file: BinaryIO, storages: Storages, where: str = "a tensor in the tree", protocol: int = 2,
                 legacy: bool = False):
        super().__init__(file, protocol=protocol)
        self.storages, self.where, self.inside_kiln_object, self.legacy = storages, where, False, legacy

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        """Every object, as ``pickle``'s; inside an object of kiln's own (a module, an optimizer) kiln's own pickling
        holds, so kiln rebuilds it (its buffers stay buffers)."""
        if self.inside_kiln_object or type(obj) in _PLAIN or not _is_kiln_object(obj):
            super().save(obj, save_persistent_id)
            return
        self.inside_kiln_object = True
        try:
            super().save(obj, save_persistent_id)
        finally:
            self.inside_kiln_object = False

    def save_reduce(self, func: Any, args: Any, *more: Any, obj: Any = None, **options: Any) -> None:
        """``pickle``'s, but a tensor's ``_rebuild_tensor_v2`` call is written opcode by opcode, as the generic path
        would write it (a tree holds thousands of tensors, and the pure pickler's per-object cost adds up)."""
        if func is not REBUILD_TENSOR:
            super().save_reduce(func, args, *more, obj=obj, **options)
            return
        storage, offset, size, stride, requires_grad, _ = args
        self.save(func)
        self.write(pickle.MARK)
        self.save_pers(self.persistent_id(storage))
        self.save_long(offset)
        self._save_ints(size)
        self._save_ints(stride)
        self.write(pickle.NEWTRUE if requires_grad else pickle.NEWFALSE)
        self.save(OrderedDict)  # backward_hooks: a fresh empty OrderedDict() for each tensor, as torch writes it
        self.write(pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.TUPLE + pickle.REDUCE)
        if obj is not None:
            self.memoize(obj)

    def _save_ints(self, values: tuple[int, ...]) -> None:
        """A tuple of ints, as protocol 2 writes one (not memoized: no tuple of a size or stride is shared)."""
        if not values:
            self.write(pickle.EMPTY_TUPLE)
            return
        if len(values) > 3:
            self.write(pickle.MARK)
        for value in values:
            self.save_long(value)
        self.write(_TUPLE_OPCODES.get(len(values), pickle.TUPLE))

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is not Storage:
            return None
        saved_id = ("storage", torch_global("torch", obj.name), obj.key, "cpu", obj.elements.size)
        return saved_id + (None,) if self.legacy else saved_id  # the legacy format's view, never one here

    def reducer_override(self, obj: Any) -> Any:
        if self.inside_kiln_object:
            return NotImplemented
        if isinstance(obj, np.ndarray):
            return self.tensor_reduction(obj, False)
        kind = _kind(obj)
        return NotImplemented if kind is None else kind(self, obj)

    def tensor_reduction(self, array: np.ndarray, requires_grad: bool) -> tuple[Any, ...]:
        array = array.view(np.ndarray)  # a TorchArray's shape and size are kiln's Size and ElementCount: plain here
        storage, offset, stride = self.storages.window(array, self.where)
        return REBUILD_TENSOR, (storage, offset, tuple(array.shape), stride, requires_grad, OrderedDict())

    def save_torch_global(self, obj: TorchGlobal) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def save_dtype(self, obj: DType) -> None:
        self.save(torch_global("torch", str(obj).removeprefix("kiln.")))  # torch.float32, as torch pickles its dtypes

    dispatch[TorchGlobal] = save_torch_global
    dispatch[DType] = save_dtype


def _tensor(pickler: TorchPickler, node: Any) -> tuple[Any, ...]:
    """A kiln tensor as torch's: a ``Parameter`` as ``_rebuild_parameter`` (a complex one of its complex values, not the
    real pairs kiln keeps); a buffer, a leaf made with ``requires_grad=True`` and any other eager tensor as a plain
    tensor with its ``requires_grad`` (kiln's ``Buffer`` and ``GradLeaf`` are ``Parameter`` subclasses, torch's are not)."""
    from kiln.frontend.complex_parameter import ComplexLeaf
    from kiln.frontend.module import GradLeaf

    array, requires_grad = tensor_array(node, pickler.where)  # a Buffer's requires_grad is None: a plain tensor
    if isinstance(node, ComplexLeaf):
        array = np.asarray(node.complex_view())
    if requires_grad is not None and not isinstance(node, GradLeaf):
        return REBUILD_PARAMETER, (array, requires_grad, OrderedDict())
    return pickler.tensor_reduction(np.asarray(array), bool(getattr(node, "requires_grad", False)))


def _size(pickler: TorchPickler, node: Any) -> tuple[Any, ...]:
    return torch_global("torch", "Size"), (tuple(node),)


def _device(pickler: TorchPickler, node: Any) -> tuple[Any, ...]:
    return torch_global("torch", "device"), (node.type,) if node.index is None else (node.type, node.index)


def _kiln_kind(obj: Any) -> Callable[[TorchPickler, Any], tuple[Any, ...]] | None:
    """How a kiln object of ``obj``'s type is pickled as torch's, or None for anything else (pickled as it is)."""
    from kiln.frontend.tensor import Tensor  # lazily: the runtime imports nothing of the frontend at load
    from kiln.frontend.tensor_device import device
    from kiln.frontend.torch_size import Size

    for kind, reduction in ((Tensor, _tensor), (Size, _size), (device, _device)):
        if isinstance(obj, kind):
            return reduction
    return None


_PLAIN = frozenset({int, float, str, bytes, bool, type(None), tuple, list, dict, OrderedDict, TorchGlobal, Storage})
"""Types the pickler meets most, none of kiln's."""


def _is_kiln_object(obj: Any) -> bool:
    """Whether ``obj`` is an instance of one of kiln's classes, or of a subclass of one (the user's ``Net(nn.Module)``),
    that torch has no counterpart for (a module, an optimizer; not a tensor, an array, a dtype, a Size or a device,
    which become torch's). Found once per type."""
    kind = type(obj)
    found = _KILN_OBJECT.get(kind)
    if found is None:
        kiln_class = any(base.__module__.startswith("kiln.") for base in kind.__mro__)
        found = _KILN_OBJECT[kind] = kiln_class and not isinstance(obj, (np.ndarray, DType, type)) and _kind(obj) is None
    return found


_KILN_OBJECT: dict[type, bool] = {}


def _kind(obj: Any) -> Callable[[TorchPickler, Any], tuple[Any, ...]] | None:
    """``_kiln_kind`` of ``obj``'s type, found once per type (the pickler asks for every object it meets)."""
    kind = _KIND_OF.get(type(obj), _UNKNOWN)
    if kind is _UNKNOWN:
        kind = _KIND_OF[type(obj)] = _kiln_kind(obj)
    return kind


_UNKNOWN = object()
_KIND_OF: dict[type, Any] = {int: None, float: None, str: None, bool: None, type(None): None, tuple: None, list: None,
                             dict: None, OrderedDict: None, TorchGlobal: None, Storage: None}
"""Each type's ``_kiln_kind``, the common ones known from the start."""


def pickled_tree(tree: Any, storages: Storages, protocol: int = 2, legacy: bool = False) -> bytes:
    """``data.pkl``'s bytes for ``tree`` (``legacy``: the legacy format's pickle), its tensors' storages collected in
    ``storages``."""
    buffer = io.BytesIO()
    try:
        TorchPickler(buffer, storages, protocol=protocol, legacy=legacy).dump(tree)
    except (CheckpointError, pickle.PicklingError, TypeError, AttributeError, ValueError) as error:
        raise failure_in(tree, "state") or CheckpointError(f"cannot save the tree: {error}") from None
    return buffer.getvalue()


def failure_in(node: Any, where: str) -> CheckpointError | None:
    """Why the first part of ``node`` that cannot be saved cannot, named by its place in the tree (``state['hook']``);
    None when every part pickles alone. Only run after the whole tree failed, so saving pays nothing for it."""
    if isinstance(node, Mapping):
        parts = ((f"{where}[{key!r}]", value) for key, value in node.items())
    elif isinstance(node, (list, tuple)):
        parts = ((f"{where}[{index}]", item) for index, item in enumerate(node))
    else:
        return _leaf_failure(node, where)
    return next((failure for part, value in parts if (failure := failure_in(value, part)) is not None), None)


def _leaf_failure(node: Any, where: str) -> CheckpointError | None:
    try:
        TorchPickler(io.BytesIO(), Storages(), where).dump(node)
    except CheckpointError as error:
        return error
    except (pickle.PicklingError, TypeError, AttributeError, ValueError) as error:
        return CheckpointError(f"cannot save {where}: a {type(node).__name__} is not an array, number, string, list or "
                               f"dict, and pickling it failed ({error}); save its state (a dict) instead")
    return None


__all__ = ["TorchArchive", "archive_name", "torch_archive", "write_torch_archive"]
