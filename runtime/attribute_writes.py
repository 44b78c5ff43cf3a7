"""What a traced function did to its modules' plain Python attributes, guarded and replayed per call.

A trace runs the function's Python once, so ``self.nfe += 1`` in a Neural ODE's vector field (or a rotary
embedding's ``self.seq_len_cached = seq_len``) happens once per trace, not once per call. As ``torch.compile``
guards on such a value and replays its store, a variant here keeps each written attribute's value before and after
the trace: a call runs the variant only while every attribute still holds its value from before (then sets the
value from after), and traces again otherwise. A value set once (a cache filled on the first call) so costs one
more trace; a counter changes at every call, so its calls trace until ``recompile_limit`` and then run eagerly,
as ``torch.compile`` falls back at its cache limit, and the count stays exact.

Only attributes set with ``module.name = value`` on a ``Module`` are seen (not a list appended to, nor a global).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kiln.frontend.trace import MISSING, TraceContext, set_attribute


@dataclass
class AttributeWrites:
    """Each written attribute: ``(module, name, value before the trace, value after it)``."""

    writes: list[tuple[Any, str, Any, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, context: TraceContext) -> "AttributeWrites":
        return cls([(module, name, before, module.__dict__.get(name, MISSING))
                    for module, name, before in context.attribute_writes.values()])

    def hold(self) -> bool:
        """Whether every written attribute holds its value from before the trace (what the trace read)."""
        return all(_same(module.__dict__.get(name, MISSING), before) for module, name, before, _ in self.writes)

    def replay(self) -> None:
        """Leave each attribute as the trace did."""
        for module, name, _, after in self.writes:
            set_attribute(module, name, after)

    def names(self) -> str:
        return ", ".join(f"{type(module).__name__}.{name}" for module, name, _, _ in self.writes)


def _same(value: Any, expected: Any) -> bool:
    """Equal numbers, strings, None and tuples of them; anything else only itself."""
    if value is expected:
        return True
    if type(value) is not type(expected) or not isinstance(value, (int, float, str, tuple)):
        return False
    try:
        return bool(value == expected)
    except Exception:  # a tuple holding arrays: compared by identity above
        return False


__all__ = ["AttributeWrites", "MISSING"]
