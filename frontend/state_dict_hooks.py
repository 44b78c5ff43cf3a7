"""PyTorch's state-dict hooks on a ``Module``: what ``state_dict()`` and ``load_state_dict()`` call per module.

```python
def rename_old_keys(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
    if prefix + "gamma" in state_dict:                   # an old checkpoint's name
        state_dict[prefix + "weight"] = state_dict.pop(prefix + "gamma")
norm.register_load_state_dict_pre_hook(rename_old_keys)
model.register_load_state_dict_post_hook(lambda module, keys: keys.missing_keys.clear())
def drop_cache(module, state_dict, prefix, local_metadata):   # changes the dict in place, returns None
    del state_dict[prefix + "cache"]
model.register_state_dict_post_hook(drop_cache)
```

As torch's: ``state_dict`` calls each module's pre hooks ``(module, prefix, keep_vars)`` before writing its entries,
and its post hooks ``(module, state_dict, prefix, local_metadata)`` after its children's (the private
``_register_state_dict_hook``'s result, where not None, is the dict returned from there). A model with load hooks
loads module by module by torch's protocol (``frontend/state_dict_loading.py``): each module's pre hooks, parents
first, with the entries under its prefix (renames there reach the load), its own entries, its children, then its post
hooks ``(module, incompatible_keys)``, which may change the missing and unexpected keys before ``strict`` is checked;
entries loaded before an error stay loaded, as torch's. A module overriding torch's ``_save_to_state_dict`` or
``_load_from_state_dict`` (the base methods here) is called as torch calls it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator

from kiln.compiler.errors import KilnError
from kiln.frontend.module_hooks import RemovableHandle, held_hook
from kiln.frontend.state_dict_loading import load_own_entries

class StateDictHookMethods:
    """The mixin ``Module`` takes the registration methods from."""

    def register_state_dict_pre_hook(self, hook: Callable[..., None]) -> RemovableHandle:
        """``hook(module, prefix, keep_vars)`` before ``state_dict`` writes this module's entries."""
        return held_hook(_registry(self, "_state_dict_pre_hooks"), hook)

    def register_state_dict_post_hook(self, hook: Callable[..., None]) -> RemovableHandle:
        """``hook(module, state_dict, prefix, local_metadata)`` after this module's entries and its children's are
        written; it changes ``state_dict`` in place (a result other than None is refused, as torch's)."""
        return held_hook(_registry(self, "_state_dict_hooks"), _returning_none(hook))

    def _register_state_dict_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """torch's private form: a result that is not None replaces the dict this module's ``state_dict`` returns."""
        return held_hook(_registry(self, "_state_dict_hooks"), hook)

    def register_load_state_dict_pre_hook(self, hook: Callable[..., None]) -> RemovableHandle:
        """``hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)``
        before this module's entries load; ``state_dict`` holds the entries under ``prefix``, renames there load."""
        return held_hook(_registry(self, "_load_state_dict_pre_hooks"), hook)

    def _register_load_state_dict_pre_hook(self, hook: Callable[..., None], with_module: bool = False) -> RemovableHandle:
        """torch's private form: the hook takes no module unless ``with_module``."""
        return held_hook(_registry(self, "_load_state_dict_pre_hooks"),
                         hook if with_module else lambda module, *arguments: hook(*arguments))

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        """torch's: this module's own parameters and persistent buffers into ``destination`` (its children apart); a
        subclass overrides it to save otherwise (``state_dict`` then calls each module's)."""
        for name, value in self._own_state_items(prefix):  # type: ignore[attr-defined]
            destination[name] = value if keep_vars else value.data

    def _load_from_state_dict(self, state_dict: Any, prefix: str, local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        """torch's: this module's load pre hooks, then its own entries (``frontend/state_dict_loading.py``); a subclass
        overrides it to load otherwise (``load_state_dict`` then goes module by module, as torch's)."""
        load_own_entries(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def register_load_state_dict_post_hook(self, hook: Callable[..., None]) -> RemovableHandle:
        """``hook(module, incompatible_keys)`` after the load; it may change the missing and unexpected keys in place
        (before ``strict`` is checked)."""
        return held_hook(_registry(self, "_load_state_dict_post_hooks"), _returning_none(hook, "load_state_dict"))


def _registry(module: Any, kind: str) -> "OrderedDict[int, Callable[..., Any]]":
    return module.__dict__.setdefault(kind, OrderedDict())


def _hooks(module: Any, kind: str) -> list[Callable[..., Any]]:
    return list(module.__dict__.get(kind, {}).values())


def _returning_none(hook: Callable[..., Any], what: str = "state_dict") -> Callable[..., None]:
    def checked(*arguments: Any) -> None:
        if hook(*arguments) is not None:
            raise KilnError(f"a {what} post hook ({getattr(hook, '__qualname__', hook)}) returned a value: it must "
                            "change its arguments in place and return None, as torch's")

    return checked


def has_hooks(modules: Iterator[Any], *kinds: str) -> bool:
    """Whether any of ``modules`` holds a hook of ``kinds``."""
    return any(module.__dict__.get(kind) for module in modules for kind in kinds)


def hooked_state_dict(module: Any, state: Any, prefix: str, keep_vars: bool) -> Any:
    """``state_dict`` of ``module`` into ``state`` with its hooks and its children's, as torch's recursion."""
    for hook in _hooks(module, "_state_dict_pre_hooks"):
        hook(module, prefix, keep_vars)
    module._save_to_state_dict(state, prefix, keep_vars)
    for name, child in module._modules.items():
        if child is not None:
            hooked_state_dict(child, state, f"{prefix}{name}.", keep_vars)  # a child's new dict is dropped, as torch's
    for hook in _hooks(module, "_state_dict_hooks"):
        result = hook(module, state, prefix, {"version": getattr(module, "_version", 1)})
        state = state if result is None else result
    return state


__all__ = ["StateDictHookMethods", "has_hooks", "hooked_state_dict"]
