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
PyTorch's.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterator, NamedTuple

from kiln.compiler.ir.core import Value


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


def version_of(tensor: Any) -> int:
    """How many eager in-place writes changed ``tensor`` (or a tensor sharing its storage): PyTorch's ``_version``."""
    counter = tensor.__dict__.get("_version_counter")
    return 0 if counter is None else counter.version


def _counter(tensor: Any) -> VersionCounter:
    counter = tensor.__dict__.get("_version_counter")
    if counter is None:
        counter = tensor._version_counter = VersionCounter()
    return counter


@contextlib.contextmanager
def counted_writes(tensor: Any) -> Iterator[None]:
    """Record, for an eager in-place write of ``tensor``, the values it overwrites (``OVERWRITTEN``) and count the
    write on every tensor whose value changed or went stale."""
    before = [(member, member.__dict__.get("_value"), "_stale" in member.__dict__) for member in _sharing(tensor)]
    yield
    for member, value, stale in before:
        rebound = member.__dict__.get("_value") is not value
        if value is not None and (rebound or (not stale and "_stale" in member.__dict__)):
            counter = _counter(member)
            written = _readers_on_the_way(value, member.__dict__.get("_value"))
            OVERWRITTEN[value] = Overwrite(weakref.ref(member), counter, counter.version, written)
            counter.version += 1


WRITE_DEPTH = 8
"""How many ops back from a write's new value its own ops are looked for (``clamp_`` takes two, ``x[i] = v`` a few)."""


def _readers_on_the_way(old: Value, new: Value | None) -> "weakref.WeakSet[Value]":
    """The results of the ops within ``WRITE_DEPTH`` ops behind ``new`` that read ``old``: the write's own ops."""
    found: "weakref.WeakSet[Value]" = weakref.WeakSet()
    frontier = [] if new is None or new is old else [new]
    seen: set[int] = set()
    for _ in range(WRITE_DEPTH):
        behind = []
        for value in frontier:
            op = value.producer
            if op is None or id(value) in seen:
                continue
            seen.add(id(value))
            if any(operand is old for operand in op.operands):
                found.add(value)
            behind.extend(operand for operand in op.operands if operand is not old)
        frontier = behind
    return found


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


__all__ = ["OVERWRITTEN", "Overwrite", "VersionCounter", "counted_writes", "version_of"]
