"""PyTorch's forward hooks on ``Module``: ``register_forward_pre_hook`` and ``register_forward_hook``.

Hooks run while the model is traced, on traced tensors, so what a hook computes becomes part of the graph: a hook
that stores a layer's output (feature extraction, a feature-matching loss) or rewrites it (a mask, a scale) traces as
if the code were in ``forward``. As in PyTorch, a pre-hook may return new positional arguments (or ``(args, kwargs)``
with ``with_kwargs=True``) and a forward hook a new output; ``None`` keeps them. Each registration returns a handle
whose ``remove()`` (or ``with`` block) takes the hook away. As in PyTorch, a registry (``module._forward_pre_hooks``)
maps each handle's id to the hook itself (``torch.nn.utils.prune``'s methods find their hook there, the pruning
tutorial prints it), and ``_forward_pre_hooks_with_kwargs`` / ``_forward_hooks_with_kwargs`` name the ids of the hooks
registered ``with_kwargs=True``. Backward hooks have no place in a compiled step, whose
gradients are one graph: registering one raises an error that says what to use instead.

``torch.nn.modules.module.register_module_forward_hook`` and its siblings register a *global* hook, run for every
module's call before the module's own hooks of that kind, as PyTorch's (a tracer that logs each layer's output shape).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any, Callable

from kiln.frontend.module_registry import Registry


_handle_ids = itertools.count()
HOOK_KINDS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
PARAMETER_HOOK_KINDS = ("_grad_hooks", "_post_accumulate_grad_hooks")
"""Where a parameter keeps its ``register_hook`` and ``register_post_accumulate_grad_hook`` hooks (``Registry``s)."""
"""The registries whose presence sends a module's call through ``call_with_hooks``."""
GLOBAL_HOOKS: dict[str, Registry] = {kind: Registry() for kind in HOOK_KINDS}
"""The global hooks of each kind (``register_module_forward_hook``...), by handle id, run for every module."""
_GLOBAL_WITH_KWARGS: dict[str, dict[int, bool]] = {kind: {} for kind in HOOK_KINDS}
_GLOBAL_FORWARD, _GLOBAL_FORWARD_PRE, _GLOBAL_BACKWARD, _GLOBAL_BACKWARD_PRE = (GLOBAL_HOOKS[kind] for kind in HOOK_KINDS)


class RemovableHandle:
    """``torch.utils.hooks.RemovableHandle``: ``remove()`` takes the hook away; also a context manager."""

    def __init__(self, registry: "OrderedDict[int, Any]", extra: "dict[int, Any] | None" = None, *,
                 extra_dict: "dict[int, Any] | None" = None):
        extra = extra if extra is not None else extra_dict  # torch's keyword
        self.id = next(_handle_ids)
        self._registry = registry
        self._extra = extra

    def remove(self) -> None:
        self._registry.pop(self.id, None)
        if self._extra is not None:
            self._extra.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def held_hook(registry: Any, hook: Callable[..., Any]) -> RemovableHandle:
    """``hook`` kept in ``registry`` (a dict by handle id, in order) under a new handle, which ``remove()`` takes it out of."""
    handle = RemovableHandle(registry)
    registry[handle.id] = hook
    return handle


def add_hook(module: Any, kind: str, hook: Callable[..., Any], with_kwargs: bool, prepend: bool) -> RemovableHandle:
    registry, with_kwargs_ids = _registry(module, kind), _registry(module, kind + "_with_kwargs")
    handle = RemovableHandle(registry, with_kwargs_ids)
    registry[handle.id] = hook
    if with_kwargs:
        with_kwargs_ids[handle.id] = True
    if prepend:
        registry.move_to_end(handle.id, last=False)
    return handle


def _registry(module: Any, name: str) -> "OrderedDict[int, Any]":
    """The module's registry ``name``, made empty on first use (a plain attribute, as PyTorch's)."""
    registry = module.__dict__.get(name)
    if registry is None:
        registry = Registry()  # its changes counted: a compiled call checks the hooks it traced (module_structure.py)
        object.__setattr__(module, name, registry)
    return registry


def registered_hooks(module: Any, kind: str) -> list[tuple[Callable[..., Any], bool]]:
    """``(hook, with_kwargs)`` for each global hook of ``kind`` and then each of the module's registry ``kind``, in order."""
    with_kwargs_ids = module.__dict__.get(kind + "_with_kwargs", {})
    global_with_kwargs = _GLOBAL_WITH_KWARGS[kind]
    return [(hook, key in global_with_kwargs) for key, hook in list(GLOBAL_HOOKS[kind].items())] + \
        [(hook, key in with_kwargs_ids) for key, hook in list(module.__dict__.get(kind, {}).items())]


def any_global_hooks() -> bool:
    """Whether a global hook of any kind is registered (a module's call then goes through ``call_with_hooks``)."""
    return bool(_GLOBAL_FORWARD_PRE or _GLOBAL_FORWARD or _GLOBAL_BACKWARD or _GLOBAL_BACKWARD_PRE)  # once per module call: no loop


def has_backward_hooks(module: Any) -> bool:
    """Whether a backward or backward pre-hook, global or the module's own, applies to ``module``."""
    return any(GLOBAL_HOOKS[kind] or module.__dict__.get(kind) for kind in ("_backward_hooks", "_backward_pre_hooks"))


def _add_global_hook(kind: str, hook: Callable[..., Any], with_kwargs: bool = False) -> RemovableHandle:
    handle = RemovableHandle(GLOBAL_HOOKS[kind], _GLOBAL_WITH_KWARGS[kind])
    GLOBAL_HOOKS[kind][handle.id] = hook
    if with_kwargs:
        _GLOBAL_WITH_KWARGS[kind][handle.id] = True
    return handle


def register_module_forward_pre_hook(hook: Callable[..., Any]) -> RemovableHandle:
    """``torch.nn.modules.module.register_module_forward_pre_hook``: ``hook(module, args)`` before every module's forward."""
    return _add_global_hook("_forward_pre_hooks", hook)


def register_module_forward_hook(hook: Callable[..., Any], *, with_kwargs: bool = False, always_call: bool = False) -> RemovableHandle:
    """``hook(module, args, output)`` (``hook(module, args, kwargs, output)`` with ``with_kwargs``) after every module's forward."""
    return _add_global_hook("_forward_hooks", hook, with_kwargs)


def register_module_full_backward_hook(hook: Callable[..., Any]) -> RemovableHandle:
    """``hook(module, grad_input, grad_output)`` at every module's eager backward (``register_full_backward_hook``'s rules)."""
    return _add_global_hook("_backward_hooks", hook)


def register_module_full_backward_pre_hook(hook: Callable[..., Any]) -> RemovableHandle:
    """``hook(module, grad_output)`` before every module's eager input gradients."""
    return _add_global_hook("_backward_pre_hooks", hook)


register_module_backward_hook = register_module_full_backward_hook


def call_with_hooks(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``module.forward(*args, **kwargs)`` between its pre-hooks and its forward hooks, as PyTorch's ``__call__``."""
    for hook, with_kwargs in registered_hooks(module, "_forward_pre_hooks"):
        result = hook(module, args, kwargs) if with_kwargs else hook(module, args)
        if result is not None:
            if with_kwargs:
                args, kwargs = result
            else:
                args = result if isinstance(result, tuple) else (result,)
    if has_backward_hooks(module):
        from kiln.runtime.eager_hooks import call_with_backward_hooks  # lazily: the runtime builds on the frontend

        output = call_with_backward_hooks(module, module.forward, args, kwargs)
    else:
        output = module.forward(*args, **kwargs)
    for hook, with_kwargs in registered_hooks(module, "_forward_hooks"):
        result = hook(module, args, kwargs, output) if with_kwargs else hook(module, args, output)
        if result is not None:
            output = result
    return output


class HookMethods:
    """The registration methods; ``Module`` inherits them."""

    def register_forward_pre_hook(self, hook: Callable[..., Any], *, prepend: bool = False, with_kwargs: bool = False) -> RemovableHandle:
        return add_hook(self, "_forward_pre_hooks", hook, with_kwargs, prepend)

    def register_forward_hook(self, hook: Callable[..., Any], *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False) -> RemovableHandle:
        return add_hook(self, "_forward_hooks", hook, with_kwargs, prepend)

    def register_full_backward_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """``hook(module, grad_input, grad_output)`` at each eager backward through this module (a tuple it returns
        replaces ``grad_input``); a compiled step, whose gradients are one graph, refuses a hooked module when traced
        (``runtime/eager_hooks.py``)."""
        return add_hook(self, "_backward_hooks", hook, False, prepend)

    def register_full_backward_pre_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """``hook(module, grad_output)`` before the module's input gradients are computed (a tuple it returns
        replaces ``grad_output``); eager only, as ``register_full_backward_hook``."""
        return add_hook(self, "_backward_pre_hooks", hook, False, prepend)

    register_backward_hook = register_full_backward_hook
