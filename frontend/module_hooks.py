"""PyTorch's forward hooks on ``Module``: ``register_forward_pre_hook`` and ``register_forward_hook``.

Hooks run while the model is traced, on traced tensors, so what a hook computes becomes part of the graph: a hook
that stores a layer's output (feature extraction, a feature-matching loss) or rewrites it (a mask, a scale) traces as
if the code were in ``forward``. As in PyTorch, a pre-hook may return new positional arguments (or ``(args, kwargs)``
with ``with_kwargs=True``) and a forward hook a new output; ``None`` keeps them. Each registration returns a handle
whose ``remove()`` (or ``with`` block) takes the hook away. Backward hooks have no place in a compiled step, whose
gradients are one graph: registering one raises an error that says what to use instead.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any, Callable


_handle_ids = itertools.count()
HOOK_KINDS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
"""The registries whose presence sends a module's call through ``call_with_hooks``."""


class RemovableHandle:
    """``torch.utils.hooks.RemovableHandle``: ``remove()`` takes the hook away; also a context manager."""

    def __init__(self, registry: "OrderedDict[int, Any]"):
        self.id = next(_handle_ids)
        self._registry = registry

    def remove(self) -> None:
        self._registry.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def add_hook(module: Any, kind: str, hook: Callable[..., Any], with_kwargs: bool, prepend: bool) -> RemovableHandle:
    registry = module.__dict__.get(kind)
    if registry is None:
        registry = OrderedDict()
        object.__setattr__(module, kind, registry)
    handle = RemovableHandle(registry)
    registry[handle.id] = (hook, with_kwargs)
    if prepend:
        registry.move_to_end(handle.id, last=False)
    return handle


def call_with_hooks(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``module.forward(*args, **kwargs)`` between its pre-hooks and its forward hooks, as PyTorch's ``__call__``."""
    for hook, with_kwargs in list(module.__dict__.get("_forward_pre_hooks", {}).values()):
        result = hook(module, args, kwargs) if with_kwargs else hook(module, args)
        if result is not None:
            if with_kwargs:
                args, kwargs = result
            else:
                args = result if isinstance(result, tuple) else (result,)
    if module.__dict__.get("_backward_hooks") or module.__dict__.get("_backward_pre_hooks"):
        from kiln.runtime.eager_hooks import call_with_backward_hooks  # lazily: the runtime builds on the frontend

        output = call_with_backward_hooks(module, module.forward, args, kwargs)
    else:
        output = module.forward(*args, **kwargs)
    for hook, with_kwargs in list(module.__dict__.get("_forward_hooks", {}).values()):
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
