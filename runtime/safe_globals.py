"""The user's own globals for ``weights_only`` loading, as ``torch.serialization`` keeps them (``kiln.serialization``).

```python
kiln.serialization.add_safe_globals([argparse.Namespace])          # then kiln.load(f) takes DiT's "args"
with kiln.serialization.safe_globals([np._core.multiarray.scalar, np.dtype]):
    checkpoint = kiln.load("dino.pth")                              # NumPy scalars in param_groups, for this load
kiln.serialization.get_unsafe_globals_in_checkpoint("run.pt")       # ['argparse.Namespace', 'numpy.dtype', ...]
```

An entry is a class or function, named by its ``__module__`` and ``__qualname__``, or a ``(object, "module.name")``
pair for one pickled under another name. Every ``weights_only`` unpickler of kiln's (torch.save's formats,
``runtime/torch_checkpoint.py``; pickled leaves of kiln's NPZ format, ``runtime/pickled_leaves.py``) asks
``user_safe_global`` for a global off its allow-list before refusing it. ``safe_globals`` adds its entries on entry
and removes them on exit, as torch's does (even ones added before it).
"""

from __future__ import annotations

import io
import os
import pickletools
import zipfile
from typing import IO, Any, Iterable, Iterator

_SAFE: list[Any] = []
"""The entries, in the order they were added, each once."""


def add_safe_globals(safe_globals: list[Any]) -> None:
    """``torch.serialization.add_safe_globals``: allow these classes and functions under ``weights_only=True``."""
    for entry in safe_globals:
        _check(entry)
        if entry not in _SAFE:
            _SAFE.append(entry)


def get_safe_globals() -> list[Any]:
    """The entries added (``torch.serialization.get_safe_globals``; torch's also lists a few of its own)."""
    return list(_SAFE)


def clear_safe_globals() -> None:
    """Forget every entry added."""
    _SAFE.clear()


class safe_globals:  # noqa: N801  (torch's name: a context manager class)
    """``with kiln.serialization.safe_globals([...]):`` the entries are allowed inside the block only."""

    def __init__(self, safe_globals: list[Any]):
        self.safe_globals = safe_globals

    def __enter__(self) -> None:
        add_safe_globals(self.safe_globals)

    def __exit__(self, *exception: Any) -> None:
        for entry in self.safe_globals:
            if entry in _SAFE:
                _SAFE.remove(entry)


def _check(entry: Any) -> None:
    if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], str):
        return
    if not hasattr(entry, "__module__") or not hasattr(entry, "__qualname__"):
        raise TypeError(f"add_safe_globals: {entry!r} is not a class or function; pass one, or an (object, "
                        "'module.name') pair naming it as it is pickled")


def user_safe_global(module: str, name: str) -> Any:
    """The entry pickled as ``module.name``, or None."""
    full_name = f"{module}.{name}"
    for entry in _SAFE:
        if isinstance(entry, tuple) and entry[1] == full_name:
            return entry[0]
        if not isinstance(entry, tuple) and f"{entry.__module__}.{entry.__qualname__}" == full_name:
            return entry
    return None


def get_unsafe_globals_in_checkpoint(f: str | os.PathLike | IO[bytes]) -> list[str]:
    """``torch.serialization.get_unsafe_globals_in_checkpoint``: the ``module.name`` of every global in the
    checkpoint's pickles that ``weights_only=True`` would refuse (off torch's allow-list and not added here), found
    without unpickling; for torch.save's formats and kiln's own."""
    content = f.read() if hasattr(f, "read") else open(os.fspath(f), "rb").read()
    unsafe: list[str] = []
    for pickled in _pickles(content):
        for module, name in _globals(pickled):
            if not _allowed(module, name) and f"{module}.{name}" not in unsafe:
                unsafe.append(f"{module}.{name}")
    return unsafe


def _pickles(content: bytes) -> Iterator[bytes]:
    """The pickles a checkpoint holds: a torch archive's ``data.pkl``, a legacy file's object, kiln's pickled members."""
    from kiln.runtime.torch_legacy_format import is_legacy_torch_file  # lazily: the readers import this module

    if zipfile.is_zipfile(io.BytesIO(content)):
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            for name in archive.namelist():
                if name.endswith("/data.pkl"):
                    yield archive.read(name)
                elif name.startswith(("p", "__module__")) and name.endswith(".npy"):  # kiln's NPZ: pickled leaves
                    import numpy as np

                    with archive.open(name) as member:
                        yield bytes(np.lib.format.read_array(member, allow_pickle=False))
    elif is_legacy_torch_file(io.BytesIO(content)):
        stream = io.BytesIO(content)
        for _ in range(3):  # magic number, protocol version, sys_info
            _skip(stream)
        yield stream.read()


def _skip(stream: IO[bytes]) -> None:
    for opcode, _, _ in pickletools.genops(stream):
        if opcode.name == "STOP":
            return


def _globals(pickled: bytes) -> Iterable[tuple[str, str]]:
    """``(module, name)`` of each GLOBAL and STACK_GLOBAL in the first pickle of ``pickled``."""
    strings: list[str] = []
    memo: dict[int, Any] = {}
    last = None  # the value the last opcode pushed, where it is a string (what a memo slot then holds)
    for opcode, argument, _ in pickletools.genops(io.BytesIO(pickled)):
        kind = opcode.name
        if kind == "GLOBAL":
            yield tuple(argument.split(" ", 1))
        elif kind == "STACK_GLOBAL" and len(strings) >= 2:
            yield strings[-2], strings[-1]
        if "UNICODE" in kind:
            last = argument
            strings.append(argument)
        elif kind in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[argument] = last
        elif kind == "MEMOIZE":
            memo[len(memo)] = last
        elif kind in ("GET", "BINGET", "LONG_BINGET"):
            last = memo.get(argument)
            if isinstance(last, str):
                strings.append(last)
        else:
            last = None
        if kind == "STOP":
            return


def _allowed(module: str, name: str) -> bool:
    from kiln.runtime.torch_checkpoint import ALLOWED, STORAGE_DTYPES  # lazily: it imports this module

    module = "builtins" if module == "__builtin__" else module
    if (module, name) in ALLOWED or user_safe_global(module, name) is not None:
        return True
    if module == "torch._utils":
        return name in ("_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state")
    return module == "torch" and (name in STORAGE_DTYPES or name in ("Size", "device") or _is_dtype_name(name))


def _is_dtype_name(name: str) -> bool:
    from kiln.compiler.ir.types import DType

    import kiln

    return isinstance(getattr(kiln, name, None), DType)


__all__ = ["add_safe_globals", "clear_safe_globals", "get_safe_globals", "get_unsafe_globals_in_checkpoint", "safe_globals",
           "user_safe_global"]
