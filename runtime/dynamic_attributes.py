"""Int attributes a ``kiln.compile``'d function changes at every call, traced as numbers that change, as
``torch.compile``'s automatic dynamic ints.

A trace guards each attribute it reads and sets on its value before (``runtime/attribute_writes.py``). For a counter
(TD3's ``self.total_it += 1``, an agent's step count) that guard fails at every call: each call traced again until
``recompile_limit``, then ran eagerly. As ``torch.compile`` marks an int dynamic once it sees it change, a variant whose
guard fails on an int attribute now marks it (``mark_changed``), and later traces read it as a ``DynamicInt``
(``frontend/dynamic_ints.py``): a graph input fed from the attribute at each call (the lifted tensors' feed,
``LiftedTensors.follow_attribute``), whose new value, when the trace sets one, the call sets back as a Python int
(``AttributeWrites.replayed``). Branches on it (``if self.total_it % 2 == 0``) are guarded per branch, not per value.

A trace that fails with an attribute read so (Python that needs a real ``int``) marks it static again and traces as
before, guarded on its value.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from kiln.frontend.dynamic_ints import DynamicInt
from kiln.frontend.eager_values import eager_leaf
from kiln.frontend.lifted_tensors import LiftedTensors
from kiln.frontend.trace import MISSING, TraceContext
from kiln.runtime.attribute_writes import AttributeWrites


@dataclass
class DynamicAttributes:
    """One compiled function's dynamic int attributes, and those placed in the trace running now."""

    marked: dict[tuple[int, str], tuple[Any, str]] = field(default_factory=dict)
    """``(id(owner), name) -> (owner, name)``: traced as ``DynamicInt``s."""
    static: set[tuple[int, str]] = field(default_factory=set)
    """Attributes whose dynamic trace failed: guarded on their value again, never marked."""
    placed: list[tuple[Any, str, int, Any]] = field(default_factory=list)
    """In the trace running now: ``(owner, name, its int, the eager tensor its graph input is lifted from)``."""
    last_placed: list[tuple[int, str]] = field(default_factory=list)
    """The keys of the attributes the last trace read as ``DynamicInt``s (``refuse_placed``)."""

    def mark_changed(self, writes: AttributeWrites) -> bool:
        """Mark each int attribute a failed variant guarded (set or read) that holds another int now; whether one was
        marked."""
        entries = [*((owner, name, before) for owner, name, before, _ in writes.writes), *writes.reads]
        return self._mark(entries, writes.unguarded, lambda now, before: type(now) is int and now != before)

    def mark_ints(self, writes: AttributeWrites) -> bool:
        """Mark each int attribute a compiled forward for training set (it cannot stand for a write once per trace:
        it has no variants to guard); whether one was marked."""
        entries = [(owner, name, before) for owner, name, before, _ in writes.writes]
        return self._mark(entries, writes.unguarded, lambda now, before: True)

    def _mark(self, entries: list[tuple[Any, str, Any]], unguarded: set[tuple[int, str]],
              changed: Callable[[Any, int], bool]) -> bool:
        marked = False
        for owner, name, before in entries:
            key = (id(owner), name)
            now = vars(owner).get(name, MISSING) if hasattr(owner, "__dict__") else MISSING
            if (type(before) is int and changed(now, before) and key not in unguarded and key not in self.static
                    and key not in self.marked):
                self.marked[key] = (owner, name)
                marked = True
        return marked

    def names(self) -> str:
        """``Agent.total_it, Field.nfe``: the marked attributes, for a message."""
        return ", ".join(f"{type(owner).__name__}.{name}" for owner, name in self.marked.values())

    def tracing(self, traced: Callable[..., Any]) -> Callable[..., Any]:
        """``traced`` reading each marked attribute that holds an int as a ``DynamicInt`` graph input."""
        if not self.marked:
            return traced

        @functools.wraps(traced)
        def placing(*inputs: Any) -> Any:
            context = TraceContext.current()
            for owner, name in self.marked.values():
                value = vars(owner).get(name)
                if type(value) is int and context.lifting is not None:
                    array = np.asarray(value, dtype=np.int64)
                    eager = eager_leaf(array)
                    owner.__dict__[name] = DynamicInt(context.lifting.lifted_input(context, eager, array))
                    self.placed.append((owner, name, value, eager))
            return traced(*inputs)

        return placing

    def follow(self, lifted: LiftedTensors) -> None:
        """Feed each placed attribute's graph input from the attribute at every call."""
        for owner, name, _, eager in self.placed:
            lifted.follow_attribute(eager, owner, name)

    def restore(self) -> None:
        """After a trace: each placed attribute holds its int again."""
        for owner, name, value, _ in self.placed:
            owner.__dict__[name] = value
        self.last_placed = [(id(owner), name) for owner, name, _, _ in self.placed]
        self.placed = []

    def refuse_placed(self) -> bool:
        """After a failed trace: the attributes it read as ``DynamicInt``s are static from now on; whether any were."""
        for key in self.last_placed:
            self.marked.pop(key, None)
            self.static.add(key)
        refused, self.last_placed = bool(self.last_placed), []
        return refused


__all__ = ["DynamicAttributes"]
