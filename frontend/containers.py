"""``ModuleList`` and ``ModuleDict``: modules held in a list or a dict, registered so their parameters are the model's.

As PyTorch's: a list's modules are named ``0``, ``1``, ... (``layers.0.weight`` in the ``state_dict``), a dict's by
their keys; neither has a ``forward`` (the owning module decides how to call them).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

from kiln.frontend.module import Module


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
