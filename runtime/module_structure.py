"""The structure of the modules a ``kiln.compile``'d function reaches, guarded as ``torch.compile`` guards a module's
parameters and submodules.

A variant's graph takes the parameters its trace read as inputs and inlines the submodules it ran. A program that
then puts another ``Parameter`` in a module (``layer.weight = nn.Parameter(pretrained)``), replaces a submodule
(``model.fc = nn.Linear(512, 10)``, ``model[1] = nn.Tanh()``) or grows a ``ModuleList`` would, run as Python, use the
new ones; the variant fed the old parameters and ran the old layers, silently. A forward hook added or removed
later is run or left as the Python would, as ``torch.compile`` guards its hooks. ``ModuleStructure`` keeps, for each
module reached (the compiled module, or those the function reaches: ``runtime/reachable_objects.py``), every module
under it with its registries' entries, compared by identity; it compares again only when some registry changed since
its last check (``frontend/module_registry.py``), so a call costs one int compare. A module whose registries are not
``Registry``s (unpickled from an older kiln) is compared at every change of another's only.
"""

from __future__ import annotations

import operator
from typing import Any

from kiln.frontend.module_hooks import GLOBAL_HOOKS, HOOK_KINDS, PARAMETER_HOOK_KINDS
from kiln.frontend.module_registry import CHANGES
from kiln.runtime.reachable_objects import reachable_objects


class ModuleStructure:
    """The modules under ``roots`` and their registries' entries when traced; ``hold`` while they are the same."""

    def __init__(self, roots: list[Any]) -> None:
        self.roots = roots
        self.snapshot = _snapshot(roots)
        self.types = _array_types(roots)
        self.checked = CHANGES[0]

    @classmethod
    def reached_by(cls, fn: Any) -> "ModuleStructure | None":
        """The structure of the modules ``fn`` is or reaches; None where it reaches none."""
        from kiln.frontend.module import Module  # lazily: the runtime builds on the frontend

        roots = [fn] if isinstance(fn, Module) else []
        roots += [item for _, _, item in reachable_objects(fn) if isinstance(item, Module) and item is not fn]
        return cls(roots) if roots else None

    def hold(self) -> bool:
        if CHANGES[0] == self.checked:
            return True
        now = _snapshot(self.roots)
        if len(now) != len(self.snapshot) or not all(map(operator.is_, now, self.snapshot)):
            return False
        if _array_types(self.roots) != self.types:  # p.data = <another shape>, a buffer assigned one in a call
            return False
        self.checked = CHANGES[0]
        return True


def _snapshot(roots: list[Any]) -> list[Any]:
    """Each module under ``roots`` followed by its submodules, parameters, buffers and hooks, flat."""
    flat: list[Any] = []
    for root in roots:
        for module in root.modules():
            flat.append(module)
            for registry in (module._modules, module._parameters, module._buffers):
                flat += registry.values()
            for parameter in module._parameters.values():  # a compiled backward calls their hooks (traced_hooks.py)
                for kind in PARAMETER_HOOK_KINDS if parameter is not None else ():
                    flat += parameter.__dict__.get(kind, {}).values()
            for kind in HOOK_KINDS:  # torch.compile traces again where forward hooks were added or removed
                flat += module.__dict__.get(kind, {}).values()
    for registry in GLOBAL_HOOKS.values():  # and where a global one was (nn.modules.module.register_module_forward_hook)
        flat += registry.values()
    return flat


def _array_types(roots: list[Any]) -> list[tuple[Any, Any]]:
    """The shape and dtype of each parameter's and buffer's array under ``roots``: a trace bakes them in (its input
    types, Python that branched on them: ``if self.mem.shape[0] == 0: mem = torch.zeros_like(x)`` over a ``zeros(0)``
    buffer the call assigns a ``(B, H)`` tensor). A replacement of another shape or dtype counts in ``CHANGES``."""
    types = []
    for root in roots:
        for module in root.modules():
            for registry in (module._parameters, module._buffers):
                types += [(p._data.shape, p._data.dtype) for p in registry.values() if p is not None and "_data" in p.__dict__]
    return types


__all__ = ["ModuleStructure"]
