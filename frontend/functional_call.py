"""``functional_call(module, {name: tensor}, args)``: run a module with other tensors in place of its parameters and
buffers, as ``torch.func.functional_call``; with ``stack_module_state``, the base of ``torch.func`` code.

```python
params = {name: p.detach() for name, p in model.named_parameters()}
def loss(params, x, y):
    return F.cross_entropy(functional_call(model, params, (x[None],)), y[None])
per_example = kiln.vmap(kiln.func.grad(loss), in_axes=(None, 0, 0))(params, x, y)   # {name: (N, *shape)}
```

During the call each named entry is replaced on its owning module (its
attribute and its registry entry) and restored afterwards, even on error.
Tied parameters (one ``Parameter`` under two names) are replaced together
unless ``tie_weights=False``; ``strict=True`` requires every parameter and
buffer to be given.

In-place updates land on the tensors given, as torch's: a BatchNorm in training
mode updates the running statistics passed for it (here, eagerly, through a
buffer sharing the given tensor's storage; inside ``torch.func`` transforms,
written back after the run: ``runtime/traced_transform.py``), and the module's
own buffers only where the given tensors share their storage (``.detach()``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.frontend.module import Module
from kiln.frontend.tensor import Tensor


def functional_call(module: Module, parameter_and_buffer_dicts: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                    args: Any = None, kwargs: Mapping[str, Any] | None = None, *, tie_weights: bool = True,
                    strict: bool = False) -> Any:
    """``module(*args, **kwargs)`` with the given tensors standing for the parameters and buffers they name."""
    given = _merged(parameter_and_buffer_dicts)
    positional = () if args is None else args if isinstance(args, tuple) else (args,)
    with substituted(module, given, tie_weights, strict):
        return module(*positional, **dict(kwargs or {}))


def stack_module_state(models: Sequence[Module]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(params, buffers)``: each name's arrays of ``models`` (same architecture) stacked on a new leading axis, for
    ``vmap`` over an ensemble (``torch.func.stack_module_state``). A stacked parameter is a new leaf that requires
    grad where the models' do, so an ensemble trains through it (``params[name].grad``); buffers require none."""
    _check_stackable(models)
    names = [list(dict(m.named_parameters())) for m in models]
    if any(n != names[0] for n in names):
        raise KilnError("stack_module_state: the models differ in their parameters; stack models of one architecture")
    params = {name: _stacked([dict(m.named_parameters())[name] for m in models], name) for name in names[0]}
    buffers = {name: _stacked([dict(m.named_buffers())[name] for m in models], name) for name, _ in models[0].named_buffers()}
    return params, buffers


def _check_stackable(models: Sequence[Module]) -> None:
    """torch's checks: at least one model, all in one mode (training or eval), all of one class."""
    if len(models) == 0:
        raise RuntimeError("stack_module_state: Expected at least one model, got 0.")
    if len({bool(m.training) for m in models}) > 1:
        raise RuntimeError("stack_module_state: Expected all models to have the same training/eval mode.")
    if any(type(m) is not type(models[0]) for m in models):
        raise RuntimeError("stack_module_state: Expected all models to be of the same class.")


def _stacked(tensors: Sequence[Any], name: str) -> Any:
    """The tensors stacked, as a new leaf that requires grad if they all do (torch's ``construct_stacked_leaf``)."""
    from kiln.frontend.eager_values import eager_leaf

    flags = {bool(t.requires_grad) for t in tensors}
    if len(flags) > 1:
        raise RuntimeError(f"Expected {name} from each model to have the same .requires_grad")
    stacked = eager_leaf(np.stack([np.asarray(t.data) for t in tensors]))
    return stacked.requires_grad_() if flags == {True} else stacked


def _merged(dicts: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for entries in [dicts] if isinstance(dicts, Mapping) else dicts:
        repeated = sorted(set(merged) & set(entries))
        if repeated:
            raise KilnError(f"functional_call: {', '.join(repeated)} appear in more than one of the dicts; give each "
                            "parameter or buffer once")
        merged.update(entries)
    return merged


@contextmanager
def substituted(module: Module, given: Mapping[str, Any], tie_weights: bool, strict: bool) -> Iterator[None]:
    """``module`` with each named parameter or buffer replaced by ``given[name]`` (and its ties), restored at exit."""
    slots = _slots(module)
    unknown = sorted(set(given) - set(slots))
    if unknown:
        raise KilnError(f"functional_call: {type(module).__name__} has no parameter or buffer {', '.join(unknown)}; its "
                        f"names are those of named_parameters() and named_buffers(), e.g. {next(iter(slots), 'none')}")
    if strict and set(slots) - set(given):
        raise KilnError(f"functional_call(strict=True): missing {', '.join(sorted(set(slots) - set(given)))}")
    by_original = {id(slots[name][2]): value for name, value in given.items()} if tie_weights else {}
    chosen = {name: by_original.get(id(original), given.get(name)) for name, (_, _, original) in slots.items()}
    saved = [(owner, registry, leaf, registry[leaf]) for name, (owner, leaf, _) in slots.items()
             if chosen[name] is not None for registry in _registries(owner, leaf)]
    try:
        for name, (owner, leaf, _) in slots.items():
            if chosen[name] is not None:
                _put(owner, leaf, _standing_in(owner, leaf, _as_tensor(chosen[name])))
        yield
    finally:
        for owner, registry, leaf, original in reversed(saved):
            registry[leaf] = original
            object.__setattr__(owner, leaf, original)


def _slots(module: Module) -> dict[str, tuple[Module, str, Any]]:
    """Every parameter and buffer name (ties included) -> (owning module, attribute name, the tensor there now)."""
    slots = {}
    for path, owner in module.named_modules():
        for registry in (owner._parameters, owner._buffers):
            for leaf, tensor in registry.items():
                if tensor is not None:
                    slots[f"{path}.{leaf}" if path else leaf] = (owner, leaf, tensor)
    return slots


def _registries(owner: Module, leaf: str) -> list[dict[str, Any]]:
    return [r for r in (owner._parameters, owner._buffers) if leaf in r]


def _put(owner: Module, leaf: str, value: Any) -> None:
    for registry in _registries(owner, leaf):
        registry[leaf] = value
    object.__setattr__(owner, leaf, value)


def _standing_in(owner: Module, leaf: str, tensor: Any) -> Any:
    """What the module holds for ``tensor`` during the call: ``tensor`` itself, except an eager tensor (not a
    parameter, needing no gradient) given for a buffer, which becomes a ``Buffer`` sharing its storage, so that an
    eager in-place update (``TraceContext.update_buffer``, which writes a buffer's array) lands on ``tensor``."""
    from kiln.frontend.eager_values import eager_value
    from kiln.frontend.module import ArrayLeaf, Buffer
    from kiln.frontend.trace import TraceContext

    eager = not TraceContext.active() or TraceContext.current().eager
    if not eager or leaf not in owner._buffers or isinstance(tensor, ArrayLeaf) or eager_value(tensor) is None:
        return tensor
    if tensor.requires_grad:
        return tensor
    buffer = Buffer(tensor)
    return buffer if np.shares_memory(buffer.data, tensor.numpy()) else tensor


def _as_tensor(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value
    from kiln.frontend.torch_functions import tensor

    return tensor(np.asarray(value))


__all__ = ["functional_call", "stack_module_state", "substituted"]
