"""``torch.optim``'s optimizer hooks: around ``step`` (``register_step_pre_hook``/``post_hook``, and the global
``torch.optim.optimizer.register_optimizer_step_pre_hook``/``post_hook``), ``state_dict`` and ``load_state_dict``.

```python
optimizer.register_step_post_hook(lambda opt, args, kwargs: ema.update_parameters(model))   # after every step
optimizer.register_load_state_dict_pre_hook(lambda opt, state: upgraded(state))             # an old checkpoint
```

As torch's, the methods of each optimizer class are wrapped once, when its first instance is made (a user's
``step`` too), so the hooks run whatever the class does inside: a step pre hook ``(optimizer, args, kwargs)`` may
return new ``(args, kwargs)``; a ``state_dict`` post hook ``(optimizer, state_dict)`` and a ``load_state_dict`` pre hook
``(optimizer, state_dict)`` may return a new dict. A wrapped method called inside another (a subclass's ``step``
calling ``super().step()``) runs the hooks once. In a ``kiln.compile``d step the hooks run while it is traced, their
tensor ops traced into the step, as torch.compile traces them; a step hook added or removed after a compiled step
was traced makes it trace again.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Callable

from kiln.compiler.errors import KilnError
from kiln.frontend.module_hooks import RemovableHandle, held_hook
from kiln.frontend.trace import step_capture

GLOBAL_STEP_PRE_HOOKS: "OrderedDict[int, Callable[..., Any]]" = OrderedDict()
GLOBAL_STEP_POST_HOOKS: "OrderedDict[int, Callable[..., Any]]" = OrderedDict()


def register_optimizer_step_pre_hook(hook: Callable[..., Any]) -> RemovableHandle:
    """``hook(optimizer, args, kwargs)`` before every optimizer's ``step``, before its own pre hooks."""
    return held_hook(GLOBAL_STEP_PRE_HOOKS, hook)


def register_optimizer_step_post_hook(hook: Callable[..., Any]) -> RemovableHandle:
    """``hook(optimizer, args, kwargs)`` after every optimizer's ``step``, after its own post hooks."""
    return held_hook(GLOBAL_STEP_POST_HOOKS, hook)


class OptimizerHookMethods:
    """The mixin ``Optimizer`` takes the registration methods from."""

    def register_step_pre_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        return held_hook(_registry(self, "_optimizer_step_pre_hooks"), hook)

    def register_step_post_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        return held_hook(_registry(self, "_optimizer_step_post_hooks"), hook)

    def register_state_dict_pre_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        return _held(self, "_optimizer_state_dict_pre_hooks", hook, prepend)

    def register_state_dict_post_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        return _held(self, "_optimizer_state_dict_post_hooks", hook, prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        return _held(self, "_optimizer_load_state_dict_pre_hooks", hook, prepend)

    def register_load_state_dict_post_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        return _held(self, "_optimizer_load_state_dict_post_hooks", hook, prepend)


def _registry(optimizer: Any, kind: str) -> "OrderedDict[int, Callable[..., Any]]":
    return optimizer.__dict__.setdefault(kind, OrderedDict())


def _held(optimizer: Any, kind: str, hook: Callable[..., Any], prepend: bool) -> RemovableHandle:
    registry = _registry(optimizer, kind)
    handle = held_hook(registry, hook)
    if prepend:
        registry.move_to_end(handle.id, last=False)
    return handle


def without_hooks(attributes: dict[str, Any]) -> dict[str, Any]:
    """An optimizer's attributes less its hooks and the markers of its running hooked methods (for pickling)."""
    return {key: value for key, value in attributes.items() if not key.startswith(("_optimizer_", "_running_hooked_"))}


def _hooks(optimizer: Any, kind: str) -> list[Callable[..., Any]]:
    return list(optimizer.__dict__.get(kind, {}).values())


def hook_methods_of(cls: type) -> None:
    """Wrap ``cls``'s ``step``, ``state_dict`` and ``load_state_dict`` (once per class) so the hooks run around them."""
    for name, wrap in (("step", _stepping), ("state_dict", _saving), ("load_state_dict", _loading)):
        method = getattr(cls, name)
        if not getattr(method, "_calls_hooks", False):
            wrapped = wrap(method)
            wrapped._calls_hooks = True  # type: ignore[attr-defined]
            setattr(cls, name, wrapped)


def _once(method: Callable[..., Any], around: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` with ``around(self, method, args, kwargs)`` where no wrapped method of ``self`` is running already."""
    running = f"_running_hooked_{method.__name__}"

    @functools.wraps(method)
    def hooked(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.__dict__.get(running):
            return method(self, *args, **kwargs)
        self.__dict__[running] = True
        try:
            return around(self, method, args, kwargs)
        finally:
            self.__dict__[running] = False

    return hooked


def _stepping(step: Callable[..., Any]) -> Callable[..., Any]:
    def around(self: Any, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        args = (self, *args)  # as torch's: the hooks see the call's own arguments, the optimizer first
        capture = step_capture()
        if capture is not None:  # a kiln.compile'd step runs the hooks it traced: one added or removed later retraces
            capture.guards.append(_same_step_hooks(self))
        for hook in [*GLOBAL_STEP_PRE_HOOKS.values(), *_hooks(self, "_optimizer_step_pre_hooks")]:
            result = hook(self, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise KilnError(f"{hook} must return None or a tuple of (new_args, new_kwargs), but got {result}.")
                args, kwargs = result
        out = method(*args, **kwargs)
        for hook in [*_hooks(self, "_optimizer_step_post_hooks"), *GLOBAL_STEP_POST_HOOKS.values()]:
            hook(self, args, kwargs)
        return out

    return _once(step, around)


def _same_step_hooks(optimizer: Any) -> Callable[[], bool]:
    """Whether the step hooks (global and ``optimizer``'s) are still those registered now."""
    def registered() -> tuple[tuple[int, ...], ...]:
        own = [optimizer.__dict__.get(kind, {}) for kind in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")]
        return tuple(tuple(registry) for registry in (GLOBAL_STEP_PRE_HOOKS, GLOBAL_STEP_POST_HOOKS, *own))

    traced = registered()
    return lambda: registered() == traced


def _saving(state_dict: Callable[..., Any]) -> Callable[..., Any]:
    def around(self: Any, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        for hook in _hooks(self, "_optimizer_state_dict_pre_hooks"):
            hook(self)
        state = method(self, *args, **kwargs)
        return _replaced(self, "_optimizer_state_dict_post_hooks", state)

    return _once(state_dict, around)


def _loading(load_state_dict: Callable[..., Any]) -> Callable[..., Any]:
    def around(self: Any, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            args = (_replaced(self, "_optimizer_load_state_dict_pre_hooks", args[0]), *args[1:])
        out = method(self, *args, **kwargs)
        for hook in _hooks(self, "_optimizer_load_state_dict_post_hooks"):
            hook(self)
        return out

    return _once(load_state_dict, around)


def _replaced(optimizer: Any, kind: str, state: Any) -> Any:
    """``state`` through ``kind``'s hooks ``(optimizer, state)``, each result that is not None taking its place."""
    for hook in _hooks(optimizer, kind):
        result = hook(optimizer, state)
        state = state if result is None else result
    return state


__all__ = ["GLOBAL_STEP_POST_HOOKS", "GLOBAL_STEP_PRE_HOOKS", "OptimizerHookMethods", "hook_methods_of",
           "register_optimizer_step_post_hook", "register_optimizer_step_pre_hook", "without_hooks"]
