"""Dicts and lists a ``kiln.compile``'d function stores its tensors into (given to it, in its closure, among the
globals it names, or on its modules): refused, never left holding the trace's tensors.

Whisper's decoding passes ``kv_cache={}`` and its hooks store ``cache[module] = torch.cat([cache[module], output])``;
fairseq's and torchscale's decoders keep an ``incremental_state`` dict the same way. ``torch.compile`` replays such a
mutation after each call. kiln does not (yet): a trace that stored its tensors there left them in the caller's dict,
so later calls read tensors with no values (an error) or, where the variant traced for the empty dict ran again, gave
silently wrong results; a dict of tensors given positionally is rebuilt for the trace, so its stores were dropped.

A cache kept in the closure (``cache = {}``), a global, or a module's attribute (``self.cache[k] = v``) fared the
same. ``check_stores`` compares each such container (nested dicts and lists too) with what it held before the trace:
where the function stored a tensor it computed into one, every container gets its contents back and the trace fails with a ``KilnError``
naming the container and the slot, so the call runs eagerly (warned; ``fullgraph=True`` raises it), as correct as
PyTorch's eager run. That refusal now stays for a container given as an argument and for stores no replay redoes (a
list the trace shrinks); the stores into a container the function reaches otherwise (its closure's, a global, a
module's attribute) are replayed after each call (``checking_reachable_stores``, ``runtime/container_stores.py``). The containers a plain object holds as attributes (an argument, a closure's or a global: a kv
cache object's lists) are checked too. Not seen: module attributes whose names start with ``_``.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Iterator

from kiln.compiler.errors import KilnError
from kiln.frontend.trace import TraceContext
from kiln.runtime.attribute_writes import eager_constant, holds_traced_tensor
from kiln.runtime.container_stores import Unreplayable, record_stores, refill, same_slots
from kiln.runtime.reachable_objects import is_plain_object, reachable_objects

MUTABLE_CONTAINERS = (dict, list, collections.deque, set)
"""The containers whose changes a trace's are checked and replayed: dicts, lists, deques and sets."""

Snapshot = list[tuple[Any, Any]]
"""``(container, its slots before the trace)`` for each dict or list reachable from one argument."""


def snapshot(value: Any) -> Snapshot:
    """Each dict and list in ``value`` (itself and nested ones) with a shallow copy of its slots."""
    return [(container, dict(container) if isinstance(container, dict) else list(container))
            for container in _containers(value, set())]


def check_stores(before: list[tuple[str, str, Snapshot]], python_values: bool = False) -> None:
    """Raise where the trace stored into one of the containers snapshotted before it (``(name, what holds it,
    snapshot)``: an argument, a closure variable, a module's attribute), after giving every one its contents back.
    A Python value an argument's container was given (``stats["n"] += 1``) is the trace's own business (a read of it
    is guarded: each new count traces again) unless ``python_values``; one it lost (``fed.pop(0)``) is not."""
    changed = next(((name, what, slot) for name, what, snapshots in before for container, slots in snapshots
                    for slot in _changed_slots(container, slots, python_values)), None)
    if changed is None:
        return
    _given_back(before)
    name, what, slot = changed
    raise KilnError(f"kiln.compile: the function stores into {what} {name!r} (at {slot!r}), a container kiln does not "
                    "update after each call (torch.compile replays such stores); the call runs eagerly. Return the new "
                    "tensors instead (a kv cache as outputs), or keep the container outside the compiled function")


def checking_reachable_stores(traced: Callable[..., Any], fn: Any) -> Callable[..., Any]:
    """``traced`` (a wrapper of ``fn`` to trace) noting, for replay after each call, its stores into the dicts and
    lists ``fn`` reaches besides its arguments: its closure's (a ``cache = {}`` the function fills) and its modules'
    attributes (``self.cache``); refusing those no replay redoes."""
    reachable = reachable_containers(fn)
    if not reachable:
        return traced

    @functools.wraps(traced)
    def checked(*inputs: Any) -> Any:
        before = [(name, what, snapshot(container)) for name, what, container in reachable]
        try:
            result = traced(*inputs)
        except BaseException:  # a failed trace changed nothing (the call runs eagerly, or traces again)
            _given_back(before)
            raise
        _replaying_stores(before)
        return result

    return checked


def _given_back(before: list[tuple[str, str, Snapshot]]) -> None:
    """Each container snapshotted in ``before`` given its contents from then."""
    for _, _, snapshots in before:
        for container, slots in snapshots:
            refill(container, slots)


def _replaying_stores(before: list[tuple[str, str, Snapshot]]) -> None:
    """Note the trace's stores of its tensors into the containers of ``before`` for replay after each call
    (``runtime/container_stores.py``) and give those containers their contents back; where one cannot be replayed,
    refuse as ``check_stores``."""
    stored = {id(container): (container, slots) for _, _, snapshots in before for container, slots in snapshots
              if any(True for _ in _changed_slots(container, slots, python_values=True))}
    try:
        record_stores(TraceContext.current(), list(stored.values()))
    except Unreplayable:
        check_stores(before, python_values=True)
    for container, slots in stored.values():
        refill(container, slots)


def reachable_containers(fn: Any) -> list[tuple[str, str, Any]]:
    """``(name, what holds it, container)`` for each dict, list or plain object ``fn`` reaches (``runtime/reachable_objects.py``:
    its closure's, the globals it names, those of the functions it holds), and among the public attributes of the
    modules it is, is bound to, closes over or names (their submodules too). The modules a plain object holds
    (``agent.actor``) are not searched: their forwards' logging dicts (pytorch_sac's ``self.outputs['mu'] = mu``) would
    make the call run eagerly, where ``torch.compile`` replays the store, which kiln does not yet."""
    from kiln.frontend.module import Module  # lazily: the runtime builds on the frontend

    reached = reachable_objects(fn)
    found = [(name, what, value) for name, what, value in reached if isinstance(value, MUTABLE_CONTAINERS) or is_plain_object(value)]
    modules = [value for name, _, value in reached if isinstance(value, Module) and "." not in name]  # not agent.actor
    for module in {id(m): m for root in modules for m in root.modules()}.values():
        found += [(f"{type(module).__name__}.{name}", "the module attribute", value)
                  for name, value in vars(module).items() if not name.startswith("_") and isinstance(value, MUTABLE_CONTAINERS)]
    return found


def _containers(value: Any, seen: set[int]) -> Iterator[Any]:
    """The dicts and lists in ``value``, itself and nested ones, also those a plain object among them holds as
    attributes (a kv cache object's ``self.key_cache = []``, as Hugging Face's ``DynamicCache``)."""
    if id(value) in seen:
        return
    if isinstance(value, MUTABLE_CONTAINERS):
        seen.add(id(value))
        yield value
        for item in (value.values() if isinstance(value, dict) else list(value)):
            yield from _containers(item, seen)
    elif is_plain_object(value):
        seen.add(id(value))
        for item in list(vars(value).values()):
            yield from _containers(item, seen)


def _changed_slots(container: Any, slots: Any, python_values: bool) -> Iterator[Any]:
    """The keys (or indices) the trace set, to a tensor it computed (or a container holding one) or, where
    ``python_values``, to a Python value (``log.append(step)``), and the keys it removed (a list's ``pop()``: the
    indices past its new length). A tensor computed from constants alone (HiFi-GAN's ``hann_window[device] =
    torch.hann_window(n)``) is stored as the eager tensor of its values, as a module keeps one
    (``Module.__setattr__``): each call would store the same."""
    if not isinstance(container, (dict, list)):  # a deque or a set: its contents as a whole
        if not same_slots(container, slots):
            yield "its contents"
        return
    keys = list(container) if isinstance(container, dict) else range(len(container))
    for key in keys:
        value = container[key]
        new = key not in slots if isinstance(container, dict) else key >= len(slots)
        if not new and value is slots[key]:
            continue
        if not holds_traced_tensor(value):
            if python_values:
                yield key
            continue
        constant = eager_constant(value)
        if constant is None:
            yield key
        else:
            container[key] = constant
    yield from (key for key in slots if key not in container) if isinstance(container, dict) else range(len(container), len(slots))


__all__ = ["check_stores", "checking_reachable_stores", "reachable_containers", "snapshot"]
