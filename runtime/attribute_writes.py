"""What a traced function did to its modules' plain Python attributes, guarded and replayed per call.

A trace runs the function's Python once, so ``self.nfe += 1`` in a Neural ODE's vector field (or a rotary
embedding's ``self.seq_len_cached = seq_len``) happens once per trace, not once per call. As ``torch.compile``
guards on such a value and replays its store, a variant here keeps each written attribute's value before and after
the trace: a call runs the variant only while every attribute still holds its value from before (then sets the
value from after), and traces again otherwise. A value set once (a cache filled on the first call) so costs one
more trace; a counter changes at every call, so its calls trace until ``recompile_limit`` and then run eagerly,
as ``torch.compile`` falls back at its cache limit, and the count stays exact.

An attribute set to a tensor the trace computed (``self.last = y``, a legacy spectral norm's ``module.weight``) has
no value to replay: it is a graph output instead, and each call sets the attribute to a new eager tensor of its
value (without a chain); its guard accepts what the trace found there or what the last call set.

Attributes set with ``module.name = value`` on a ``Module`` are seen by its ``__setattr__``; those of a compiled
bound method's own object when it is no Module (``kiln.compile(agent.update)``, TD3's ``self.total_it += 1`` in an
agent ``class TD3(object)``) by comparing its attributes before and after the trace (``watching_plain_owner``). Not
seen: a list appended to, a global, another plain object's attribute.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from kiln.frontend.trace import MISSING, TraceContext, set_attribute


@dataclass
class AttributeWrites:
    """Each written attribute: ``(module, name, value before the trace, value after it)``."""

    writes: list[tuple[Any, str, Any, Any]] = field(default_factory=list)
    tensors: list[tuple[Any, str, Any]] = field(default_factory=list)
    """Attributes set to a traced tensor: ``(module, name, value before the trace)``; their values are outputs."""
    last_set: list[Any] = field(default_factory=list)
    """The eager tensor each of ``tensors`` was set to by the last call (None before the first)."""

    @classmethod
    def of(cls, context: TraceContext) -> "AttributeWrites":
        writes, tensors = [], []
        for module, name, before in context.attribute_writes.values():
            after = module.__dict__.get(name, MISSING)
            if _traced_tensor(after):
                tensors.append((module, name, before))
            else:
                writes.append((module, name, before, after))
        return cls(writes, tensors, [None] * len(tensors))

    def traced_values(self) -> list[Any]:
        """The traced tensors' values (the graph's outputs for them); each attribute gets its value from before the
        trace back meanwhile (the trace's tensor has no values outside it)."""
        values = []
        for module, name, before in self.tensors:
            values.append(module.__dict__[name].value)
            set_attribute(module, name, before)
        return values

    def hold(self) -> bool:
        """Whether every written attribute holds its value from before the trace (what the trace read); one set to a
        tensor may also hold what the last call set it to."""
        if not all(_same(module.__dict__.get(name, MISSING), before) for module, name, before, _ in self.writes):
            return False
        current = [module.__dict__.get(name, MISSING) for module, name, _ in self.tensors]
        return all(value is before or value is last
                   for value, (_, _, before), last in zip(current, self.tensors, self.last_set))

    def replayed(self, outputs: Sequence[Any]) -> Sequence[Any]:
        """Leave each attribute as the trace did, those set to a tensor to an eager one holding its value in this
        call's ``outputs`` (their last); returns the other outputs."""
        from kiln.frontend.eager_values import eager_leaf  # lazily: the tensor values build on the trace

        for module, name, _, after in self.writes:
            set_attribute(module, name, after)
        if not self.tensors:
            return outputs
        first = len(outputs) - len(self.tensors)
        for index, ((module, name, _), array) in enumerate(zip(self.tensors, outputs[first:], strict=True)):
            self.last_set[index] = eager_leaf(np.array(array))
            set_attribute(module, name, self.last_set[index])
        return outputs[:first]

    def names(self) -> str:
        return ", ".join(f"{type(module).__name__}.{name}" for module, name, _, _ in self.writes)


def watching_plain_owner(traced: Callable[..., Any], fn: Any) -> Callable[..., Any]:
    """``traced`` (a wrapper of ``fn`` to trace) recording, as attribute writes of the trace, the attributes it changes
    on ``fn``'s own object where ``fn`` is a bound method of a plain Python object: that object has no ``__setattr__``
    hook to record them, and a counter it bumps (``self.total_it += 1``) would else count once per trace, silently,
    where ``torch.compile`` guards on it and replays the store. ``traced`` itself where ``fn`` has no such object."""
    owner = _plain_owner(fn)
    if owner is None:
        return traced

    @functools.wraps(traced)
    def watched(*inputs: Any) -> Any:
        before = dict(vars(owner))
        try:
            return traced(*inputs)
        finally:  # a failed trace's writes too: the context restores them (TraceContext.restore_attributes)
            _record_changes(owner, before)

    return watched


def _plain_owner(fn: Any) -> Any:
    """A bound method's object that is a plain Python object (no Module, tensor, class or Python module), else None."""
    from kiln.frontend.module import Module
    from kiln.frontend.tensor import Tensor

    owner = getattr(fn, "__self__", None)
    if owner is None or isinstance(owner, (Module, Tensor, type, types.ModuleType)) or not hasattr(owner, "__dict__"):
        return None
    return owner


def _record_changes(owner: Any, before: dict[str, Any]) -> None:
    """Each of ``owner``'s attributes the trace set, added, or deleted, kept with its value from before the trace."""
    writes = TraceContext.current().attribute_writes
    after = vars(owner)
    for name in [*before, *(name for name in after if name not in before)]:
        old, new = before.get(name, MISSING), after.get(name, MISSING)
        if not _same(new, old) and not _holds_traced_tensors(new):
            writes.setdefault((id(owner), name), (owner, name, old))


def _holds_traced_tensors(value: Any) -> bool:
    """Whether ``value`` is a list, tuple or dict holding a tensor the trace computed (``self.losses = [loss_g,
    loss_d]``): no value to replay nor a graph output, it is left as the trace set it, unguarded (a guard on it would
    fail at every call)."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return any(_traced_tensor(item) for item in items)


def _traced_tensor(value: Any) -> bool:
    """Whether ``value`` is a tensor with no values outside the trace (one the trace computed)."""
    from kiln.frontend.eager_values import ARRAYS
    from kiln.frontend.tensor import Tensor

    return isinstance(value, Tensor) and "_value" in value.__dict__ and value.__dict__["_value"] not in ARRAYS


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


__all__ = ["AttributeWrites", "MISSING", "watching_plain_owner"]
