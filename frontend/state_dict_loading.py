"""``load_state_dict`` module by module, as torch's, where a module overrides ``_load_from_state_dict`` or has load
hooks.

```python
class Legacy(nn.Linear):
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "W" in state_dict:                  # an old checkpoint's name
            state_dict[prefix + "weight"] = state_dict.pop(prefix + "W").t()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
```

kiln's own ``load_state_dict`` (``frontend/module.py``) checks every key and shape of the whole model before it
writes anything. A subclass that overrides ``_load_from_state_dict`` expects torch's protocol instead, which this
file follows: each module, parents first, gets the entries under its prefix and loads its own parameters and
buffers (``load_own_entries``, the base method: its load pre hooks first, then each entry shape-checked and copied,
missing and unexpected keys and errors collected), its children get their own entries after it, its load post hooks
run after its children; ``strict`` and the collected errors raise at the end, so entries loaded before an error stay
loaded, as torch's.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Any, Mapping

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.frontend.torch_size import Size


class IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict`` did not load, as PyTorch's ``_IncompatibleKeys`` (module order; the state's order)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<All keys matched successfully>" if not self.missing_keys and not self.unexpected_keys else super().__repr__()


COMPILE_PREFIX = "_orig_mod."
"""What ``torch.compile``'s module puts before every key of its ``state_dict``."""


def without_compile_prefix(state: Mapping[str, Any], own: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` with ``_orig_mod.`` taken off its keys when every key has it and none of the model's does."""
    prefixed = [key.startswith(COMPILE_PREFIX) for key in state]
    if not prefixed or not all(prefixed) or any(key.startswith(COMPILE_PREFIX) for key in own):
        return state
    return {key[len(COMPILE_PREFIX):]: value for key, value in state.items()}


def load_own_entries(module: Any, state_dict: Mapping[str, Any], prefix: str, local_metadata: dict[str, Any],
                     strict: bool, missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
    """torch's ``Module._load_from_state_dict``: the load pre hooks, then this module's own parameters and persistent
    buffers from ``state_dict[prefix + name]``; with ``strict``, the keys under ``prefix`` that name nothing here."""
    from kiln.frontend.grad_mode import no_grad
    from kiln.frontend.module import _stored_form, _to_numpy  # lazily: the module builds on this file

    for hook in list(module.__dict__.get("_load_state_dict_pre_hooks", {}).values()):
        hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
    own = dict(module._own_state_items(prefix))
    for key, tensor in own.items():
        if key not in state_dict:
            missing_keys.append(key) if strict else None
            continue
        array = _stored_form(tensor, np.asarray(_to_numpy(state_dict[key])))
        if array.shape != tensor.data.shape:
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {Size(array.shape)} from checkpoint, "
                              f"the shape in current model is {Size(tensor.data.shape)}.")
            continue
        with no_grad():
            tensor.copy_(array)
    if strict:
        known = set(module._modules) | {key[len(prefix):] for key in own}
        unexpected_keys.extend(key for key in state_dict if key.startswith(prefix)
                               and key[len(prefix):].split(".", 1)[0] not in known)


def load_module_by_module(root: Any, state: Mapping[str, Any], strict: bool) -> Any:
    """``root.load_state_dict(state, strict)`` by torch's recursion (see the module docstring)."""
    metadata = getattr(state, "_metadata", None) or {}
    missing: list[str] = []
    unexpected: list[str] = []
    errors: list[str] = []

    def load(module: Any, local: dict[str, Any], prefix: str) -> None:
        module._load_from_state_dict(local, prefix, dict(metadata.get(prefix[:-1], {})), True, missing, unexpected,
                                     errors)
        for name, child in module._modules.items():
            if child is not None:
                inner = f"{prefix}{name}."
                load(child, OrderedDict((k, v) for k, v in local.items() if k.startswith(inner)), inner)
        for hook in list(module.__dict__.get("_load_state_dict_post_hooks", {}).values()):
            hook(module, IncompatibleKeys(missing, unexpected))

    load(root, OrderedDict(state), "")
    for module in root.modules():
        module._read_buffers_again()
    if strict and unexpected:
        errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{key}"' for key in unexpected) + ". ")
    if strict and missing:
        errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{key}"' for key in missing) + ". ")
    if errors:
        raise KilnError(f"Error(s) in loading state_dict for {type(root).__name__}:\n\t" + "\n\t".join(errors))
    return IncompatibleKeys(missing, unexpected)


def by_torch_protocol(root: Any) -> bool:
    """Whether ``root``'s load goes module by module: a module in it has load hooks or overrides
    ``_load_from_state_dict``."""
    from kiln.frontend.state_dict_hooks import has_hooks  # lazily: the hooks' mixin builds on this file

    modules = list(root.modules())
    return has_hooks(modules, "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks") or overridden(
        modules, "_load_from_state_dict")


def overridden(modules: Any, method: str) -> bool:
    """Whether a module among ``modules`` has its own ``method`` (``_load_from_state_dict``, ``_save_to_state_dict``)."""
    from kiln.frontend.state_dict_hooks import StateDictHookMethods  # lazily: the hooks' mixin builds on this file

    base = getattr(StateDictHookMethods, method)
    return any(getattr(type(module), method) is not base for module in modules)


__all__ = ["COMPILE_PREFIX", "IncompatibleKeys", "by_torch_protocol", "load_module_by_module", "load_own_entries", "overridden", "without_compile_prefix"]
