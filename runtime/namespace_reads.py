"""The globals, closure variables and container items a ``kiln.compile``'d function reads, guarded as
``torch.compile`` guards them.

A trace runs the Python once and keeps what it read as constants: a script's ``TEMPERATURE = 0.5`` annealed between
calls, a closure's ``scale`` rebound by its ``nonlocal`` setter, ``CFG["dropout"]`` changed in a config dict, a
notebook's ``model = Net()`` run again, or ``noise = torch.randn(...)`` drawn anew for each call were read once, and
every later call silently used the first value. Now each place the function reads (``Slot``: a global its code names,
a closure cell, an item of a user's dict or list held there; ``runtime/reachable_objects.py`` finds the functions) is
checked at each call (an item through what holds it now, a path, as ``torch.compile``'s guard sources: a closure's
``accum = []`` rebound between calls is read anew):

- a number, string, None or tuple of them is guarded on its value (another value traces a variant for it);
- a module, an optimizer or a user's function on its identity;
- a tensor the trace lifted to an input is fed from the slot at each call (``LiftedTensors.follow``); one it did not
  lift is guarded on its identity.

An int global the function reads or sets (``global step; step += 1``) is read and set as a plain object's int
attribute is (``Globals``): guarded on its value, and once it changes at every call a number that changes
(``runtime/dynamic_attributes.py``). Another slot the trace itself sets (``CFG["n"] += 1``) is set again by every
call to what the trace left there, while the guard on its value before the trace holds; one set to a tensor the trace computed cannot
be replayed, and the call runs eagerly (``NamespaceWriteError``). A list the trace grows or shrinks (a log:
``traces.append(...)``) is written once per trace, as before, and not guarded. Containers past ``ITEMS_LIMIT`` items
are not guarded item by item.
"""

from __future__ import annotations

import functools
import types
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from kiln.compiler.errors import KilnError
from kiln.frontend.trace import MISSING, TraceContext
from kiln.frontend.dynamic_ints import DynamicInt
from kiln.runtime.attribute_writes import READ, eager_constant, guardable, is_traced_tensor, same_value
from kiln.runtime.container_stores import stored_slots
from kiln.runtime.reachable_objects import is_users, reachable_functions

ITEMS_LIMIT = 64
"""A dict or list held in a slot is guarded item by item up to this many items (a config, a schedule's table)."""

NESTING_LIMIT = 3
"""Dicts and lists held in those are read through too, this many levels deep (open_clip's ``accum_features[key][j]``),
while the items so found number ``ITEMS_LIMIT`` at most."""

NAMESPACE_READS: "weakref.WeakKeyDictionary[TraceContext, NamespaceReads]" = weakref.WeakKeyDictionary()
"""Per trace, what ``guarding_namespace_reads`` found (``runtime/attribute_writes.py`` takes it into the variant)."""


class NamespaceWriteError(KilnError):
    """The compiled function set a global, closure variable or container item to a tensor it computed."""


@dataclass(frozen=True)
class Slot:
    """A place the function reads: ``get`` its value now (``MISSING`` where it is gone), ``put`` one there."""

    get: Callable[[], Any]
    put: Callable[[Any], None]
    name: str
    container: Any = None
    """The dict or list an item or length slot is of."""
    global_of: Any = None
    """A global's slot: the function's globals (``Globals.of`` them)."""
    key: Any = None
    """A global's name, an item's key or index."""


def _global_slot(namespace: dict[str, Any], name: str) -> Slot:
    return Slot(functools.partial(namespace.get, name, MISSING), functools.partial(namespace.__setitem__, name),
                f"the global {name}", global_of=namespace, key=name)


class Globals:
    """A module's globals as an object's attributes (its ``__dict__`` is them), so that an int global is read, set and
    made a number that changes as an int attribute of a plain object is (``runtime/attribute_writes.py``'s ``READ``
    and attribute writes, ``runtime/dynamic_attributes.py``): ``global step; step += 1`` is a counter like
    ``self.total_it += 1``. One per globals dict, kept, so the dynamic ints' keys stay the same across traces."""

    _made: dict[int, "Globals"] = {}

    @classmethod
    def of(cls, namespace: dict[str, Any]) -> "Globals":
        made = cls._made.get(id(namespace))
        if made is None or made.__dict__ is not namespace:
            made = cls._made[id(namespace)] = cls()
            made.__dict__ = namespace
        return made


def _cell_slot(cell: types.CellType, name: str) -> Slot:
    def get() -> Any:
        try:
            return cell.cell_contents
        except ValueError:  # an empty cell: the name is not assigned yet
            return MISSING

    return Slot(get, functools.partial(setattr, cell, "cell_contents"), f"the closure variable {name}")


def _item_slot(holder: Slot, container: dict[Any, Any] | list[Any], key: Any) -> Slot:
    """Item ``key`` of the dict or list ``holder`` holds at each call (read through it, as ``torch.compile``'s guard
    sources are paths: a closure's ``accum = []`` rebound between calls is read anew); ``container`` is the one it held
    at the trace."""

    def get() -> Any:
        now = holder.get()
        if type(now) is dict:
            return now.get(key, MISSING)
        return now[key] if type(now) is list and key < len(now) else MISSING

    def put(value: Any) -> None:
        holder.get()[key] = value

    return Slot(get, put, f"{holder.name}[{key!r}]", container, key=key)


def _length_slot(holder: Slot, container: list[Any]) -> Slot:
    def get() -> Any:
        now = holder.get()
        return len(now) if type(now) is list else MISSING

    return Slot(get, _no_put, f"len({holder.name})", container)


def _no_put(value: Any) -> None:
    """A length is not set: the list's items are."""


def namespace_slots(fn: Any, depth: int = 3) -> list[Slot]:
    """The globals named by the code of each function ``fn`` reaches (nested code too: a generator expression's), their
    closure cells, and the items of the plain dicts and lists those hold."""
    slots = []
    for function in reachable_functions(fn, depth):
        names = _global_names(function.__code__)
        slots += [_global_slot(function.__globals__, name) for name in names if name in function.__globals__]
        slots += [_cell_slot(cell, name) for name, cell in zip(function.__code__.co_freevars, function.__closure__ or ())]
    return slots + [item for slot in slots for item in _item_slots(slot)]


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _global_names(constant)
    return names


def _item_slots(slot: Slot) -> list[Slot]:
    """The items of the dict or list ``slot`` holds, and those of the containers they hold, ``NESTING_LIMIT`` levels
    deep while they number ``ITEMS_LIMIT`` at most (the first level's items always)."""
    found: list[Slot] = []
    holders = [slot]
    for _ in range(NESTING_LIMIT):
        holders = [item for holder in holders for item in _direct_item_slots(holder)]
        if found and len(found) + len(holders) > ITEMS_LIMIT:
            break
        found += holders
    return found


def _direct_item_slots(slot: Slot) -> list[Slot]:
    container = slot.get()
    if type(container) is dict and len(container) <= ITEMS_LIMIT:
        return [_item_slot(slot, container, key) for key in list(container) if guardable(key)]
    if type(container) is list and len(container) <= ITEMS_LIMIT:
        return [_length_slot(slot, container), *(_item_slot(slot, container, k) for k in range(len(container)))]
    return []


def _watched(value: Any) -> bool:
    """Whether a slot holding ``value`` is guarded: a guardable value, a module, an optimizer (a resumed run's new
    one under the old name), a user's function, a tensor."""
    from kiln.frontend.module import Module  # lazily: the runtime builds on the frontend
    from kiln.frontend.optim import Optimizer
    from kiln.frontend.tensor import Tensor

    if isinstance(value, (Module, Optimizer, Tensor)) or guardable(value):
        return True
    return isinstance(value, types.FunctionType) and is_users(value)


@dataclass
class NamespaceReads:
    """The slots a trace read, each with its value before the trace (guarded), and those it set (replayed)."""

    guarded: list[tuple[Slot, Any]] = field(default_factory=list)
    replays: list[tuple[Slot, Any]] = field(default_factory=list)
    followed: list[Slot] = field(default_factory=list)
    """Slots holding a tensor the trace lifted: fed from the slot at each call, not guarded (``follow_lifted``)."""

    def hold(self) -> bool:
        return all(_holds(slot.get(), value) for slot, value in self.guarded)

    def replay(self) -> None:
        for slot, value in self.replays:
            slot.put(value)

    def changed_names(self) -> list[str]:
        return [slot.name for slot, value in self.guarded if not _holds(slot.get(), value)]

    def follow_lifted(self, lifted: Any) -> None:
        """Feed each lifted tensor a slot held before the trace from that slot at each call (``noise = randn(...)``
        rebound between calls), no longer guarding its identity."""
        lifted_ids = {id(tensor) for tensor in lifted.tensors}
        for slot, value in list(self.guarded):
            if id(value) in lifted_ids and slot.get() is value:
                lifted.follow(value, slot.get)
                self.guarded.remove((slot, value))
                self.followed.append(slot)


def _holds(now: Any, before: Any) -> bool:
    """A guardable value by value; anything else (a module, a function, a tensor: its values read by the trace are
    guarded on their own, ``LiftedTensors.hold``) by identity, which costs no comparison of a large tensor's values."""
    return now is before or (guardable(before) and same_value(now, before))


def guarding_namespace_reads(traced: Callable[..., Any], fn: Any) -> Callable[..., Any]:
    """``traced`` (a wrapper of ``fn`` to trace) noting, in ``NAMESPACE_READS``, the slots ``fn`` reads and what the
    trace set in them; ``traced`` itself where it reads none."""
    slots = namespace_slots(fn)
    if not slots:
        return traced

    @functools.wraps(traced)
    def watched(*inputs: Any, **keywords: Any) -> Any:
        before = [slot.get() for slot in slots]
        context = TraceContext.current()
        context.undo_writes.append(functools.partial(_put_back, slots, before))  # a failed trace's writes
        result = traced(*inputs, **keywords)
        NAMESPACE_READS[context] = _reads(slots, before)
        return result

    return watched


def _reads(slots: list[Slot], before: list[Any]) -> NamespaceReads:
    """The guards and replays of one trace; a slot set to a tensor the trace computed (from more than constants) is
    refused: the trace fails, and its context puts the slots back (``_put_back``)."""
    reads = NamespaceReads()
    containers, items = stored_slots(TraceContext.current())  # runtime/container_stores.py replays those stores
    logs = {id(slot.container) for slot, old in zip(slots, before) if slot.put is _no_put and slot.get() != old}
    for slot, old in zip(slots, before):
        if slot.container is not None and id(slot.container) in logs:
            continue  # a list the trace appends to (a log, traces.append(...)): written once per trace, not guarded
        new = slot.get()
        if slot.container is not None and (id(slot.container), slot.key) in items:
            continue  # an item the trace stored into: set by each call's replay, not guarded
        if id(old) in containers:
            reads.guarded.append((slot, old))  # the container the replay stores into: the same one at each call
            continue
        if slot.global_of is not None and (type(old) is int or isinstance(old, DynamicInt)):
            _int_global(slot, old, new)  # a counter's, as an int attribute's
            continue
        if _watched(old):
            reads.guarded.append((slot, old))
        if new is old or same_value(new, old):
            continue
        kept = eager_constant(new) if is_traced_tensor(new) else new
        if kept is None or not (_watched(kept) or old is MISSING):
            raise NamespaceWriteError(f"the compiled function sets {slot.name} to a value a trace cannot give at each "
                                      "call (a tensor it computed); keep it on a module (self.h = ...) or return it")
        reads.replays.append((slot, kept))
        slot.put(kept)
    return reads


def _int_global(slot: Slot, old: Any, new: Any) -> None:
    """An int global the trace read (guarded on its value, ``READ``) or set (an attribute write of ``Globals``: guarded
    on its value before, set by each call, and a number that changes once it changes at every call)."""
    owner, name = Globals.of(slot.global_of), slot.key
    context = TraceContext.current()
    if new is old:
        READ.setdefault(context, {})[(id(owner), name)] = (owner, name, old)
    else:
        context.attribute_writes.setdefault((id(owner), name), (owner, name, old))


def _put_back(slots: list[Slot], before: list[Any]) -> None:
    """Each slot's value from before a trace that failed (the call then runs eagerly and sets them itself)."""
    for slot, old in zip(slots, before):
        if old is not MISSING and slot.get() is not old:
            slot.put(old)


__all__ = ["NAMESPACE_READS", "NamespaceReads", "NamespaceWriteError", "Slot", "guarding_namespace_reads",
           "namespace_slots"]
