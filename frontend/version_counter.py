"""PyTorch's version counter for eager tensors that are not parameters: which values an in-place write overwrote.

An eager in-place write rebinds the tensor to a new value (``tensor_inplace.rebind``); the old value stays in every
graph that read it, with its old array. PyTorch counts the write instead (``x._version``), and ``backward()`` refuses
a graph whose backward needs a value since overwritten (``runtime/saved_versions.py`` checks the values the backward
reads). Here each eager write records the values it overwrote: the tensor's own, and those of the tensors that share
its storage in PyTorch (its view family, the base it was indexed or viewed from), which PyTorch counts together.

```python
h = w + 1; y = h * w; h.add_(1)      # OVERWRITTEN[h's old value] = (h, version 0); h is at version 1
y.sum().backward()                   # mul saved h: PyTorch's RuntimeError "... is at version 1; expected version 0"
```

A parameter's writes are counted by ``eager_values.count_update``; a write through ``x.data`` is never counted, as
PyTorch's: ``x.data`` has a counter of its own (its views share it), so a write through it changes ``x``'s values, also
those a backward saved (torch's shared storage), and counts nothing on ``x``; and a write to ``x`` none on ``x.data``.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterator, NamedTuple

from kiln.compiler.ir.core import Op, Value


class VersionCounter:
    """A tensor's count of in-place writes; kept by the values it overwrote, so it outlives the tensor."""

    def __init__(self) -> None:
        self.version = 0


class Overwrite(NamedTuple):
    """A value a write replaced: the tensor that held it (weakly), its counter and its version while it did, and the
    results of the write's own ops that read it (``x.mul_(w)``'s product): PyTorch's in-place op saves a copy of the
    old value it needs, so its backward is never refused for its own write."""

    holder: "weakref.ref[Any]"
    counter: VersionCounter
    version: int
    written: "weakref.WeakSet[Value]"


OVERWRITTEN: "weakref.WeakKeyDictionary[Value, Overwrite]" = weakref.WeakKeyDictionary()
"""Eager values replaced by an in-place write of their tensor (or of a tensor sharing its storage)."""
REWRITTEN: "weakref.WeakSet[Value]" = weakref.WeakSet()
"""Eager values whose array a write through another counter's tensor replaced (``x.data``'s): torch's shared storage."""
WRITES_RUNNING: list[list[Any]] = []
"""For each eager in-place write in progress (the innermost last), the results of the eager ops it has run so far
(``runtime/eager.py`` appends them): the write's own ops, which ``counted_writes`` tells from those run before it."""


def version_of(tensor: Any) -> int:
    """How many eager in-place writes changed ``tensor`` (or a tensor sharing its storage): PyTorch's ``_version``."""
    counter = tensor.__dict__.get("_version_counter")
    return 0 if counter is None else counter.version


def _counter(tensor: Any) -> VersionCounter:
    counter = tensor.__dict__.get("_version_counter")
    if counter is None:
        counter = tensor._version_counter = VersionCounter()
    return counter


WRITTEN_VIEWS: "weakref.WeakKeyDictionary[Any, weakref.WeakSet[Value]]" = weakref.WeakKeyDictionary()
"""By view family: the values eager writes gave its views (``a.div_(2)`` of ``a = m[0]``: ``a / 2``, made from ``a``'s
old value, not from ``m``'s new one). A later write to the family overwrites them in PyTorch (one counter per storage),
also those of views already collected whose values a backward saved (timm's ``drop_path`` of popped mask rows)."""


@contextlib.contextmanager
def counted_writes(tensor: Any) -> Iterator[None]:
    """Record, for an eager in-place write of ``tensor``, the values it overwrites (``OVERWRITTEN``) and count the
    write on every tensor sharing its counter, as PyTorch's one counter per storage: those whose value changed or went
    stale, those the write left alone (a disjoint ``m[1]`` of a write to ``m[0]``: stale, made again from the base when
    next read, so a backward that saved their old value refuses and one that reads them afterwards does not) and the
    values views already collected got by their own writes (``WRITTEN_VIEWS``)."""
    sharing = _sharing(tensor)
    before = [(member, member.__dict__.get("_value"), _is_stale(member)) for member in sharing]
    families = _families(sharing)
    orphans = [value for family in families for value in WRITTEN_VIEWS.get(family, ())]
    counted = _counter_owner(tensor)
    version = version_of(counted)
    with _ran_by_the_write() as ran:
        yield
    for member, value, stale in before:
        if value is None:
            continue
        rebound = member.__dict__.get("_value") is not value
        changed = rebound or (not stale and _is_stale(member))
        if _counter_owner(member) is not counted:
            if changed:
                _rewrite_saved(member, value)
            continue
        if not changed and (stale or not _left_stale(member)):
            continue
        counter = _counter(member)
        written = _readers_among(value, ran)
        OVERWRITTEN[value] = Overwrite(weakref.ref(member), counter, counter.version, written)
        counter.version += 1
        if rebound and _is_view(member):
            WRITTEN_VIEWS.setdefault(member.__dict__["_family"], weakref.WeakSet()).add(member.__dict__["_value"])
    held = {id(member.__dict__.get("_value")) for member in sharing}
    _count_orphans([value for value in orphans if id(value) not in held], _counter(counted), version)


def count_metadata_change(tensor: Any) -> None:
    """``t_``, ``squeeze_`` and the other metadata-only in-place ops: PyTorch counts them on the storage's counter
    though no element changes (``x._version`` goes up, on its views too). kiln's backward still reads the old
    values, which hold the same elements: nothing is recorded as overwritten (torch's backward refuses a tensor
    saved before such an op; kiln's gives the gradient)."""
    _counter(_counter_owner(tensor)).version += 1


def _families(sharing: list[Any]) -> list[Any]:
    found = {id(family): family for member in sharing
             if (family := member.__dict__.get("_family")) is not None and not family.of_parameter}
    return list(found.values())


def _is_stale(member: Any) -> bool:
    """Whether ``member`` is to be made again from its base when read (``_stale`` None: fresh, as an indexed view a
    write went through leaves it)."""
    return member.__dict__.get("_stale") is not None


def _left_stale(member: Any) -> bool:
    """Mark a view the write left alone stale (True), where it is made again from its base when read."""
    if "_view_of" not in member.__dict__:
        return False
    member._stale = "an in-place write to a tensor sharing its storage"
    return True


def _is_view(member: Any) -> bool:
    family = member.__dict__.get("_family")
    return family is not None and not family.of_parameter and (
        "_view_of" in member.__dict__ or "_indexed_from" in member.__dict__)


def _count_orphans(orphans: list[Value], counter: VersionCounter, version: int) -> None:
    """Written views' values no live member holds: overwritten by this write (their tensors are gone: no holder)."""
    for value in orphans:
        if value not in OVERWRITTEN:
            OVERWRITTEN[value] = Overwrite(_no_holder, counter, version, weakref.WeakSet())


def _no_holder() -> None:
    """The holder of an overwritten value whose tensor was collected (``Overwrite.holder``'s dead reference)."""
    return None


def _counter_owner(tensor: Any) -> Any:
    """The tensor whose version counter ``tensor`` shares: up its chain of views (and indexings) to the base, or to the
    first ``x.data`` on the way, which PyTorch gives a counter of its own (``Tensor.data`` marks it ``_data_alias``)."""
    while "_data_alias" not in tensor.__dict__:
        indexed_from, view_of = tensor.__dict__.get("_indexed_from"), tensor.__dict__.get("_view_of")
        if indexed_from is None and view_of is None:
            return tensor
        tensor = indexed_from[0] if indexed_from is not None else view_of.base
    return tensor


def _rewrite_saved(member: Any, old: Value) -> None:
    """``member`` shares the written storage but not its counter (``x`` written through ``x.data``, as Tacotron 2's
    ``outputs[0].data.masked_fill_(mask, 0.0)``): PyTorch counts nothing, and a backward that saved ``member``'s old
    value reads the new one from the shared storage, so the old value's eager array becomes the new one."""
    from kiln.frontend.eager_values import ARRAYS
    from kiln.frontend.view_writes import refreshed

    if "_stale" in member.__dict__:
        refreshed(member)
    new = member.__dict__.get("_value")
    if new is not None and new in ARRAYS:
        _rewrite_views(old, new)


def _rewrite_views(old: Value, new: Value) -> None:
    from kiln.frontend.eager_values import ARRAYS

    if old in ARRAYS:
        ARRAYS[old] = ARRAYS[new]
        REWRITTEN.add(old)


def rewrite_saved_views(ops: list[Op], results: dict[tuple[int, int], Value]) -> None:
    """Make again, from the new arrays, the arrays of the views kiln's ops made of a value written through ``x.data``
    (``conv1d``'s ``x.unsqueeze(2)``, which its backward reads): the chain ``ops`` (forward order) with their eager
    ``results`` by (position, index), before a backward feeds them."""
    from kiln.frontend.eager_values import ARRAYS
    from kiln.frontend.tensor_inplace import VIEW_OPS
    from kiln.frontend.trace import TraceContext

    for position, op in enumerate(ops):
        result = results.get((position, 0))
        if result is not None and op.name in VIEW_OPS and op.operands and op.operands[0] in REWRITTEN:
            ARRAYS[result] = ARRAYS[TraceContext.current().emit(op.name, *op.operands, **op.attrs)]
            REWRITTEN.add(result)


@contextlib.contextmanager
def _ran_by_the_write() -> Iterator[list[Any]]:
    """The results of the eager ops run inside (those of a write nested in it included, as they are its own too)."""
    WRITES_RUNNING.append([])
    try:
        yield WRITES_RUNNING[-1]
    finally:
        ran = WRITES_RUNNING.pop()
        if WRITES_RUNNING:
            WRITES_RUNNING[-1].extend(ran)


def _readers_among(old: Value, ran: list[Any]) -> "weakref.WeakSet[Value]":
    """The results of the write's own ops (``ran``) that read ``old``, or a view of it (``y[:2].mul_(w)`` reads the
    slice of ``y``'s old value): their backward never refuses for this write (a ``tensor.add`` of ``x += y`` does,
    however, not exempt the ``y = x * w`` run before it, whose backward needs ``x``)."""
    found: "weakref.WeakSet[Value]" = weakref.WeakSet()
    for result in ran:
        for value in result if isinstance(result, tuple) else (result,):
            op = value.producer
            if op is not None and any(_views(operand, old) for operand in op.operands):
                found.add(value)
    return found


def _views(value: Value, old: Value) -> bool:
    """Whether ``value`` is ``old`` or made from it by view ops alone (not past a ``clone()``'s copy)."""
    from kiln.frontend.eager_values import COPIES
    from kiln.frontend.tensor_inplace import VIEW_OPS  # lazily: the in-place methods build on this module

    while value is not old:
        op = value.producer
        if op is None or op.name not in VIEW_OPS or not op.operands or value in COPIES:
            return False
        value = op.operands[0]
    return True


def _sharing(tensor: Any) -> list[Any]:
    """``tensor`` and the tensors sharing its storage in PyTorch that kiln follows: the bases it was indexed or viewed
    from, and the members of their view families."""
    found: dict[int, Any] = {}
    pending = [tensor]
    while pending:
        current = pending.pop()
        if id(current) in found or not hasattr(current, "__dict__"):
            continue
        found[id(current)] = current
        pending.extend(_related(current))
    return list(found.values())


def _related(tensor: Any) -> list[Any]:
    related = []
    indexed_from = tensor.__dict__.get("_indexed_from")
    if indexed_from is not None:
        related.append(indexed_from[0])
    view_of = tensor.__dict__.get("_view_of")
    if view_of is not None:
        related.append(view_of.base)
    family = tensor.__dict__.get("_family")
    if family is not None and not family.of_parameter:
        related.extend(family.members.values())
    return related


__all__ = ["OVERWRITTEN", "Overwrite", "REWRITTEN", "VersionCounter", "count_metadata_change", "counted_writes", "rewrite_saved_views", "version_of"]
