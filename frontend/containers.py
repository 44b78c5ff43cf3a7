"""``ModuleList``/``ModuleDict`` and ``ParameterList``/``ParameterDict``: modules or parameters held in a list or a
dict, registered so their parameters are the model's.

As PyTorch's: a list's entries are named ``0``, ``1``, ... (``layers.0.weight``, ``params.0`` in the ``state_dict``),
a dict's by their keys; none has a ``forward`` (the owning module decides how to use them).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from kiln.frontend.module import ArrayLeaf, Buffer, Module, Parameter, _to_numpy


class ModuleList(Module):
    """``torch.nn.ModuleList``: indexing, slicing (a new list of the same modules), ``append``, ``extend``, ``insert``."""

    def __init__(self, modules: Iterable[Module] | None = None):
        super().__init__()
        self.extend(modules or [])

    def append(self, module: Module) -> "ModuleList":
        _check_module(module, len(self))
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> "ModuleList":
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        modules = list(self)
        modules.insert(index, module)
        self._renumber(modules)

    def __getitem__(self, index: int | slice) -> Any:
        modules = list(self._modules.values())
        return ModuleList(modules[index]) if isinstance(index, slice) else modules[self._position(index)]

    def __setitem__(self, index: int, module: Module) -> None:
        _check_module(module, index)
        setattr(self, str(self._position(index)), module)

    def __delitem__(self, index: int | slice) -> None:
        modules = list(self)
        del modules[index if isinstance(index, slice) else self._position(index)]
        self._renumber(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    def __iadd__(self, modules: Iterable[Module]) -> "ModuleList":
        return self.extend(modules)

    def _position(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a ModuleList of {len(self)} modules")
        return index % len(self)

    def _renumber(self, modules: list[Module]) -> None:
        for name in list(self._modules):
            delattr(self, name)
        self.extend(modules)


class ModuleDict(Module):
    """``torch.nn.ModuleDict``: string keys in insertion order, ``[]``, ``in``, ``keys``/``values``/``items``, ``update``, ``pop``."""

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None):
        super().__init__()
        self.update(modules or {})

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        if not isinstance(key, str) or not key or "." in key:
            raise KeyError(f"ModuleDict keys are non-empty strings without '.', got {key!r}")
        _check_module(module, key)
        setattr(self, key, module)

    def __delitem__(self, key: str) -> None:
        self.pop(key)

    def pop(self, key: str) -> Module:
        module = self._modules[key]
        delattr(self, key)
        return module

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._modules))

    def keys(self) -> Iterable[str]:
        return self._modules.keys()

    def values(self) -> Iterable[Module]:
        return self._modules.values()

    def items(self) -> Iterable[tuple[str, Module]]:
        return self._modules.items()

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        for key, module in (modules.items() if isinstance(modules, Mapping) else modules):
            self[key] = module


def _check_module(module: Any, where: Any) -> None:
    if not isinstance(module, Module):
        raise TypeError(f"a module container holds kiln Modules; entry {where!r} is a {type(module).__name__}")


def _as_parameter(value: Any, where: Any) -> Parameter:
    """A ``Parameter`` as is; an array (NumPy, nested lists, a torch tensor) becomes a new trainable one, as
    PyTorch's containers wrap plain tensors."""
    if isinstance(value, Buffer):
        raise TypeError(f"a parameter container holds trainable Parameters; entry {where!r} is a Buffer")
    if isinstance(value, ArrayLeaf):
        return value
    array = np.asarray(_to_numpy(value))
    if array.dtype.kind not in "fiub":
        raise TypeError(f"a parameter container holds Parameters or numeric arrays; entry {where!r} is a {type(value).__name__}")
    return Parameter(array)


class ParameterList(Module):
    """``torch.nn.ParameterList``: parameters named ``0``, ``1``, ... (``params.0`` in the ``state_dict``); indexing,
    slicing (a new list of the same parameters), ``append``, ``extend``, ``+=``. An entry may be ``None``
    (Transformer-XL's ``out_projs.append(None)``): it counts and indexes as torch's, and is no parameter."""

    def __init__(self, values: Iterable[Any] | None = None):
        super().__init__()
        self._size = 0
        if values is not None:
            self.extend(values)

    def append(self, value: Any) -> "ParameterList":
        self._size += 1
        self[self._size - 1] = value
        return self

    def extend(self, values: Iterable[Any]) -> "ParameterList":
        for value in values:
            self.append(value)
        return self

    def __iadd__(self, values: Iterable[Any]) -> "ParameterList":
        return self.extend(values)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ParameterList(list(self)[index])
        return getattr(self, str(self._position(index)))

    def __setitem__(self, index: int, value: Any) -> None:
        setattr(self, str(self._position(index)), None if value is None else _as_parameter(value, index))

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Parameter | None]:
        return iter([getattr(self, str(position)) for position in range(self._size)])

    def _position(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a ParameterList of {len(self)} parameters")
        return index % len(self)

    def __repr__(self) -> str:
        return _parameters_repr(self)


class ParameterDict(Module):
    """``torch.nn.ParameterDict``: string keys in insertion order (``params.<key>`` in the ``state_dict``), ``[]``,
    ``in``, ``keys``/``values``/``items``, ``get``, ``update``, ``pop``, ``setdefault``, ``clear``."""

    def __init__(self, parameters: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None):
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    def __getitem__(self, key: str) -> Parameter:
        return self._parameters[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or not key or "." in key:
            raise KeyError(f"ParameterDict keys are non-empty strings without '.', got {key!r}")
        if key not in self._parameters and hasattr(self, key):
            raise KeyError(f"ParameterDict: the key {key!r} would hide the attribute of that name; pick another key")
        setattr(self, key, _as_parameter(value, key))

    def __delitem__(self, key: str) -> None:
        if key not in self._parameters:
            raise KeyError(key)
        delattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self._parameters

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._parameters))

    def keys(self) -> Iterable[str]:
        return self._parameters.keys()

    def values(self) -> Iterable[Parameter]:
        return self._parameters.values()

    def items(self) -> Iterable[tuple[str, Parameter]]:
        return self._parameters.items()

    def get(self, key: str, default: Any = None) -> Any:
        return self._parameters.get(key, default)

    def pop(self, key: str) -> Parameter:
        parameter = self[key]
        del self[key]
        return parameter

    def setdefault(self, key: str, default: Any = None) -> Parameter:
        if key not in self:
            self[key] = default
        return self[key]

    def clear(self) -> None:
        for key in list(self):
            del self[key]

    def update(self, parameters: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        for key, value in (parameters.items() if isinstance(parameters, Mapping) else parameters):
            self[key] = value

    def __repr__(self) -> str:
        return _parameters_repr(self)


def _parameters_repr(container: Module) -> str:
    """PyTorch's layout: one ``(name): Parameter ...`` line per entry."""
    lines = [f"  ({name}): Parameter of shape {tuple(p.shape)} ({p.data.dtype})" for name, p in container._parameters.items()]
    return f"{type(container).__name__}(" + ("\n" + "\n".join(lines) + "\n" if lines else "") + ")"
