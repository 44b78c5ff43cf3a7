"""A module's members by dotted path, as PyTorch's ``get_submodule``/``get_parameter``/``get_buffer``/``set_submodule``.

```python
model.get_submodule("encoder.layers.0")            # the layer
model.get_buffer("bn.running_mean")                # the buffer
model.set_submodule("encoder.layers.0", nn.Identity())   # replaced in its parent, under its name
```
"""

from __future__ import annotations

from typing import Any


class ModulePaths:
    """The mixin ``Module`` takes these from (``frontend/module.py``)."""

    def get_submodule(self, target: str) -> Any:
        """The submodule at the dotted path ``target`` (``"encoder.layers.0"``); ``""`` is this module."""
        module = self
        for name in target.split(".") if target else []:
            if name not in module._modules:  # type: ignore[attr-defined]
                raise AttributeError(f"{type(module).__name__} has no submodule {name!r} (looking up {target!r})")
            module = module._modules[name]  # type: ignore[attr-defined]
        return module

    def get_parameter(self, target: str) -> Any:
        """The parameter at the dotted path ``target`` (``"0.weight"``)."""
        return self._member(target, "_parameters", "parameter")

    def get_buffer(self, target: str) -> Any:
        """The buffer at the dotted path ``target`` (``"bn.running_mean"``)."""
        return self._member(target, "_buffers", "buffer")

    def set_submodule(self, target: str, module: Any, strict: bool = False) -> None:
        """Put ``module`` at the dotted path ``target``, in its parent under its name, as PyTorch's; ``strict``: only
        where a submodule is there already. What is there and is no module is refused, as PyTorch's."""
        from kiln.frontend.module import Module  # lazily: the module builds on this mixin

        if not target:
            raise ValueError("Cannot set the submodule without a target name!")
        if not isinstance(module, Module):
            raise ValueError(f"`module` is not an nn.Module, found {type(module)}")
        path, _, name = target.rpartition(".")
        parent = self.get_submodule(path)
        if strict and name not in parent._modules:
            raise AttributeError(f"{type(parent).__name__} has no attribute `{name}`")
        if hasattr(parent, name) and not isinstance(getattr(parent, name), Module):
            raise AttributeError(f"`{name}` is not an nn.Module")
        setattr(parent, name, module)

    def _member(self, target: str, registry: str, kind: str) -> Any:
        path, _, name = target.rpartition(".")
        module = self.get_submodule(path)
        if name not in getattr(module, registry):
            raise AttributeError(f"{type(module).__name__} has no {kind} {name!r} (looking up {target!r})")
        return getattr(module, registry)[name]


__all__ = ["ModulePaths"]
