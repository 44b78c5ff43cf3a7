"""A module's registries (``_parameters``, ``_buffers``, ``_modules``) as ordered dicts that count their changes.

``kiln.compile`` feeds a variant the parameters its trace read and runs the submodules it traced; a program that
puts another parameter or submodule in a module afterwards (``layer.weight = nn.Parameter(pretrained)``,
``load_state_dict(assign=True)``, ``model.fc = nn.Linear(512, 10)``, ``blocks.append(new_block)``) changes what the
same Python would run. Every change of a registry counts in ``CHANGES``, so a variant checks the structure it traced
(``runtime/module_structure.py``) only when something changed since its last check: one int compare per call.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

CHANGES = [0]
"""How many times any module's registry changed in this process."""


class Registry(OrderedDict):
    """An ``OrderedDict`` counting each change in ``CHANGES`` (a removal of a missing key changes nothing)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        CHANGES[0] += 1

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        CHANGES[0] += 1

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            CHANGES[0] += 1
        return super().pop(key, *default)

    def popitem(self, last: bool = True) -> Any:
        CHANGES[0] += 1
        return super().popitem(last)

    def clear(self) -> None:
        CHANGES[0] += 1
        super().clear()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def move_to_end(self, key: Any, last: bool = True) -> None:
        CHANGES[0] += 1
        super().move_to_end(key, last)


__all__ = ["CHANGES", "Registry"]
