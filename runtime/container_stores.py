"""Stores a ``kiln.compile``'d function makes into the dicts and lists it reaches, replayed after each call, as
``torch.compile`` replays such side effects.

Grad-CAM's forward hook keeps ``acts[name] = output`` in a dict its closure holds, a feature extractor appends
``features.append(out)`` to a list, pytorch_sac's actor logs ``self.outputs["mu"] = mu``, a decoder fills
``self.cache[i] = k``: the caller reads them after the call. A trace runs that Python once, and its tensors have no
values outside it, so these stores were refused (the call ran eagerly). Now each container a trace stored into
(``runtime/container_arguments.py`` finds them and their contents before the trace) is given its contents back, and a
``ContainerStores`` keeps what to redo: each traced tensor stored becomes a graph output, and after every call the
stores are made again into the same container, in the order a diff of before and after gives (a dict's items in their
order, a list's index sets, then its appends), with the call's eager tensors and the Python values the trace stored
beside them. Reads of a stored tensor later in the trace see the traced value: the container is put back only after.

Guards, as ``torch.compile``'s: each key a dict item set was present (or absent) before the trace, each list stored
into has its length from before (an append's place, an index set's slot); ``runtime/namespace_reads.py`` guards the
identity of a global or closure variable holding such a container and leaves the stored items unguarded (each call
sets them).

Python values are stores too (``log.append(step)``, ``stats["seen"] = n``), replayed the same way. A container the
trace shrank (timm Mixup's fed parameters, ``self.fed.pop(0)``; a dict key deleted) is replayed whole: guarded on
all its contents from before the trace (the very objects; equal plain values), given the contents the trace left
(``wholes``); so are the deques and sets it changed (a ``deque.popleft()`` of queued values). The call after one that popped finds the list changed, so it traces again with the next item, as
``torch.compile`` guards the list's length and recompiles.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

from kiln.frontend.trace import TraceContext
from kiln.runtime.attribute_writes import eager_constant, holds_traced_tensor, is_traced_tensor, same_value

CONTAINER_STORES: "weakref.WeakKeyDictionary[TraceContext, ContainerStores]" = weakref.WeakKeyDictionary()
"""Per trace, the stores ``record_stores`` found (``AttributeWrites.of`` takes them into the variant)."""

APPEND = object()
"""The key of a store that appends to a list."""


class Unreplayable(Exception):
    """A container changed in a way a replay cannot redo (a traced tensor in a container kiln cannot rebuild)."""


@dataclass
class ContainerStores:
    """The stores of one trace: ``(container, key or APPEND, value)``, a value's traced tensors replaced by
    ``_Output(k)`` (the ``k``-th of ``tensors``, a graph output), with the guards they need."""

    stores: list[tuple[Any, Any, Any]] = field(default_factory=list)
    tensors: list[Any] = field(default_factory=list)
    """The traced tensors stored, in output order (dropped once their values are outputs)."""
    present: list[tuple[dict[Any, Any], Any, bool]] = field(default_factory=list)
    """``(dict, key, whether it was there before the trace)``."""
    lengths: list[tuple[list[Any], int]] = field(default_factory=list)
    """``(list, its length before the trace)``."""
    wholes: list[tuple[Any, Any, Any]] = field(default_factory=list)
    """``(container, its slots before the trace, its contents after)``: a container the trace shrank, replayed whole
    and guarded on all its slots."""
    replaced: list[tuple[Any, Any, Any]] = field(default_factory=list)
    """``(container, key, tensor)``: a tensor a store replaced, guarded on its identity (the trace may have read it)
    until ``follow_lifted`` tells the ones it read, fed from their slot at each call, from those it did not."""
    outputs: int = 0

    def traced_values(self) -> list[Any]:
        """The stored traced tensors' graph values (outputs, last)."""
        values, self.outputs, self.tensors = [tensor.value for tensor in self.tensors], len(self.tensors), []
        return values

    def hold(self) -> bool:
        return (all((key in container) is was for container, key, was in self.present)
                and all(len(container) == length for container, length in self.lengths)
                and all(container[key] is tensor for container, key, tensor in self.replaced)
                and all(same_slots(container, before) for container, before, _ in self.wholes))

    def follow_lifted(self, lifted: Any) -> None:
        """Feed each replaced tensor the trace read as an input (lifted) from its slot at each call, as
        ``torch.compile`` reads the container anew (a cache the last call's replay set); one it read as a constant (a
        training forward's) stays guarded on its identity; one it never read (a logging dict's) is not guarded."""
        lifted_ids = {id(tensor) for tensor in lifted.tensors}
        constants = {id(tensor) for tensor, _ in lifted.guarded}
        for container, key, tensor in self.replaced:
            if id(tensor) in lifted_ids:
                lifted.follow(tensor, functools.partial(container.__getitem__, key))
        self.replaced = [replaced for replaced in self.replaced if id(replaced[2]) in constants]

    def replay(self, arrays: Sequence[Any]) -> None:
        """Store again, with this call's ``arrays`` (the outputs of ``traced_values``) as eager tensors."""
        from kiln.frontend.eager_values import eager_leaf  # lazily: the tensor values build on the trace

        tensors = [eager_leaf(array) for array in arrays]
        for container, key, value in self.stores:
            value = _filled(value, tensors)
            if key is APPEND:
                container.append(value)
            else:
                container[key] = value
        for container, _, after in self.wholes:
            refill(container, _filled(after, tensors))

    def changed_names(self) -> list[str]:
        names = [f"the key {key!r} of a dict it stores into" for container, key, was in self.present
                 if (key in container) is not was]
        names += [f"the length of a list it stores into ({length} before)" for container, length in self.lengths
                  if len(container) != length]
        return names + [f"the contents of a {type(container).__name__} it shrank ({len(before)} items before, now "
                        f"{len(container)})" for container, before, _ in self.wholes if not same_slots(container, before)]


@dataclass(frozen=True)
class _Output:
    index: int


def record_stores(context: TraceContext, changed: list[tuple[Any, Any]]) -> None:
    """Note the stores into each of ``changed`` (``(container, its slots before the trace)``) for replay, and give each
    container its contents back; raises ``Unreplayable`` (the caller restores and refuses) where one cannot be."""
    stores = ContainerStores()
    for container, before in changed:
        if isinstance(container, dict):
            _dict_stores(stores, container, before)
        elif isinstance(container, list):
            _list_stores(stores, container, before)
        else:  # a deque or a set
            _whole(stores, container, before)
    CONTAINER_STORES[context] = stores


def stored_slots(context: TraceContext) -> tuple[set[int], set[tuple[int, Any]]]:
    """The ids of the containers the trace ``context`` stored into, and ``(id(container), key)`` of each tensor it set
    (``runtime/namespace_reads.py`` guards the first on identity and leaves the second unguarded)."""
    stores = CONTAINER_STORES.get(context)
    if stores is None:
        return set(), set()
    return ({id(c) for c, _, _ in [*stores.stores, *stores.wholes]},
            {(id(c), key) for c, key, value in stores.stores if key is not APPEND and not _plain(value)})


def _plain(value: Any) -> bool:
    """A Python value holding no tensor: a read of the slot it is stored at stays guarded (``stats["n"] += 1`` traces
    again for the next count, as ``torch.compile`` guards the number it read)."""
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on the trace

    if isinstance(value, (_Output, Tensor)):
        return False
    if type(value) in (list, tuple):
        return all(_plain(item) for item in value)
    if type(value) is dict:
        return all(_plain(item) for item in value.values())
    return True


def _dict_stores(stores: ContainerStores, container: dict[Any, Any], before: dict[Any, Any]) -> None:
    if any(key not in container for key in before):
        _whole(stores, container, before)
        return
    for key, value in container.items():
        if key not in before or value is not before[key]:
            stores.stores.append((container, key, _placeheld(value, stores)))
            stores.present.append((container, key, key in before))
            _note_replaced(stores, container, key, before.get(key))


def _list_stores(stores: ContainerStores, container: list[Any], before: list[Any]) -> None:
    if len(container) < len(before):
        _whole(stores, container, before)
        return
    for index, value in enumerate(container):
        if index >= len(before) or value is not before[index]:
            stores.stores.append((container, index if index < len(before) else APPEND, _placeheld(value, stores)))
            _note_replaced(stores, container, index, before[index] if index < len(before) else None)
    stores.lengths.append((container, len(before)))


def _whole(stores: ContainerStores, container: Any, before: Any) -> None:
    """A container the trace shrank: replayed whole, guarded on every slot it had (``ContainerStores.wholes``)."""
    after = dict(container) if isinstance(container, dict) else list(container)
    stores.wholes.append((container, before, _placeheld(after, stores)))


def same_slots(container: Any, before: Any) -> bool:
    """Whether ``container`` holds what ``before`` held: the same keys in order, each slot the very object or an equal
    value (``same_value``: a float the trace read); a set the same items."""
    if isinstance(container, dict):
        return list(container) == list(before) and all(same_value(container[key], before[key]) for key in before)
    if isinstance(container, set):
        return container == set(before)
    return len(container) == len(before) and all(same_value(now, was) for now, was in zip(container, before))


def refill(container: Any, contents: Any) -> None:
    """``container`` holding ``contents`` (a dict's items, a list's slots), itself kept."""
    if isinstance(container, list):
        container[:] = contents
        return
    container.clear()
    if isinstance(container, (dict, set)):
        container.update(contents)
    else:  # a deque
        container.extend(contents)


def _note_replaced(stores: ContainerStores, container: Any, key: Any, old: Any) -> None:
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on the trace

    if isinstance(old, Tensor):
        stores.replaced.append((container, key, old))


def _placeheld(value: Any, stores: ContainerStores) -> Any:
    """``value`` with each traced tensor in it (nested lists, tuples, dicts too) an ``_Output``; one computed from
    constants alone is its eager tensor."""
    if is_traced_tensor(value):
        constant = eager_constant(value)
        if constant is not None:
            return constant
        stores.tensors.append(value)
        return _Output(len(stores.tensors) - 1)
    if type(value) in (list, tuple) and holds_traced_tensor(value):
        return type(value)(_placeheld(item, stores) for item in value)
    if type(value) is dict and holds_traced_tensor(value):
        return {key: _placeheld(item, stores) for key, item in value.items()}
    if holds_traced_tensor(value):
        raise Unreplayable("a traced tensor in a container kiln cannot rebuild")
    return value


def _filled(value: Any, tensors: list[Any]) -> Any:
    if isinstance(value, _Output):
        return tensors[value.index]
    if type(value) in (list, tuple):
        return type(value)(_filled(item, tensors) for item in value)
    if type(value) is dict:
        return {key: _filled(item, tensors) for key, item in value.items()}
    return value


__all__ = ["APPEND", "CONTAINER_STORES", "ContainerStores", "Unreplayable", "record_stores", "refill", "same_slots", "stored_slots"]
