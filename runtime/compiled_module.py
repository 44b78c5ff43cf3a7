"""``kiln.compile(module)``: a compiled function that is also a ``Module``, as ``torch.compile``'s ``OptimizedModule``.

```python
compiled = kiln.compile(model)
isinstance(compiled, kiln.nn.Module)      # True: a parent registers it, AveragedModel and export_onnx take it
compiled._orig_mod is model               # torch's name for the module it compiles
```

It shares the module's registries (``_parameters``, ``_modules``, ``_buffers``, the non-persistent buffers' names), so every ``Module`` method walks
the module itself: ``compiled.parameters()``, ``state_dict()`` (the module's own keys, which kiln loads either way,
``_orig_mod.`` or not), ``to()``, ``train()``. Attributes it does not have are the module's, and setting or
deleting one sets or deletes it on the module, so the compiled object answers as the module. Forward hooks
registered on it run around the compiled call, as ``OptimizedModule``'s. A copy or pickle compiles a copy of the
module afresh (generated code is not copied).
"""

from __future__ import annotations

from typing import Any

from kiln.frontend.module import Module
from kiln.frontend.module_hooks import HOOK_KINDS, call_with_hooks
from kiln.runtime.compiled_function import _FIELDS, CompiledFunction


class CompiledModule(CompiledFunction, Module):
    """``fn`` (a Module) compiled: a ``CompiledFunction`` and a ``Module`` whose registries are ``fn``'s."""

    def __init__(self, fn: Module, *args: Any, **kwargs: Any) -> None:
        for registry in ("_parameters", "_modules", "_buffers"):
            object.__setattr__(self, registry, getattr(fn, registry))
        # which buffers state_dict leaves out (register_buffer(persistent=False) makes the set on first use)
        object.__setattr__(self, "_non_persistent_buffers_set", fn.__dict__.setdefault("_non_persistent_buffers_set", set()))
        CompiledFunction.__init__(self, fn, *args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FIELDS:
            object.__setattr__(self, name, value)
        else:
            setattr(self.fn, name, value)  # compiled.head = ...: the module's, which the next trace reads

    def __delattr__(self, name: str) -> None:
        delattr(self.fn, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if any(kind in self.__dict__ for kind in HOOK_KINDS):  # hooks on the compiled module: around its call
            return call_with_hooks(self, args, kwargs)
        return CompiledFunction.__call__(self, *args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return CompiledFunction.__call__(self, *args, **kwargs)

    @property
    def training(self) -> bool:  # type: ignore[override]
        """The module's mode (``Module.train`` sets it on each module it walks, this one included)."""
        return self.fn.training

    @training.setter
    def training(self, mode: bool) -> None:
        self.fn.training = mode

    @property
    def _orig_mod(self) -> Module:
        """The module compiled (``torch.compile``'s name)."""
        return self.fn

    def __reduce__(self) -> tuple[Any, ...]:
        return _compiled_again, (self.fn, self.backend, self.pipeline, self.batch_dim, self.seed, self.fullgraph)

    def __repr__(self) -> str:
        return f"kiln.compile({self.fn!r})"

    __eq__ = object.__eq__
    __hash__ = object.__hash__


def _compiled_again(fn: Module, backend: str, pipeline: str, batch_dim: Any, seed: Any, fullgraph: bool) -> CompiledModule:
    compiled = CompiledModule(fn, backend, pipeline, batch_dim, seed)
    compiled.fullgraph = fullgraph
    return compiled


__all__ = ["CompiledModule"]
