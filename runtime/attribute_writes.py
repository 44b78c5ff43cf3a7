"""What a traced function did to its modules' plain Python attributes, guarded and replayed per call.

A trace runs the function's Python once, so ``self.nfe += 1`` in a Neural ODE's vector field (or a rotary
embedding's ``self.seq_len_cached = seq_len``) happens once per trace, not once per call. As ``torch.compile``
guards on such a value and replays its store, a variant here keeps each written attribute's value before and after
the trace: a call runs the variant only while every attribute still holds its value from before (then sets the
value from after), and traces again otherwise. A value set once (a cache filled on the first call) so costs one
more trace; an int that changes at every call (a counter) is traced as a number that changes from its second
trace on (``runtime/dynamic_attributes.py``), as ``torch.compile``'s automatic dynamic ints; any other value that
changes at every call traces until ``recompile_limit`` and then runs eagerly, as ``torch.compile`` falls back at its
cache limit.

An attribute set to a tensor the trace computed (``self.last = y``, a legacy spectral norm's ``module.weight``) has
no value to replay: it is a graph output instead, and each call sets the attribute to a new eager tensor of its
value (without a chain); its guard accepts what the trace found there or what the last call set.

Attributes set with ``module.name = value`` on a ``Module`` are seen by its ``__setattr__``; those of the plain Python
objects the compiled function reaches (a bound method's object, TD3's ``self.total_it += 1``, or an object its closure
holds) by ``runtime/plain_object_writes.py``, which also tells the writes of attributes first read (guarded) from
those first set (only replayed); what the function reaches is found by ``runtime/reachable_objects.py`` (its closure,
the globals it names, their plain objects' attributes). Stores into the dicts and lists it reaches are replayed by
``runtime/container_stores.py`` (``stores``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from kiln.frontend.dynamic_ints import DynamicInt
from kiln.frontend.trace import MISSING, TraceContext, set_attribute

READ: "weakref.WeakKeyDictionary[TraceContext, dict[tuple[int, str], tuple[Any, str, Any]]]" = weakref.WeakKeyDictionary()
"""Per trace, the plain objects' attributes it read and left (``cfg.scale``, ``runtime/plain_object_writes.py``):
``(id(object), name) -> (object, name, value)``, guarded on that value, as ``torch.compile`` guards what it reads."""
UNGUARDED: "weakref.WeakKeyDictionary[TraceContext, set[tuple[int, str]]]" = weakref.WeakKeyDictionary()
"""Per trace, the ``(id(object), name)`` of the writes it made before reading the attribute (a plain object's field a
helper re-sets at each call, ``runtime/plain_object_writes.py``): replayed, not guarded, as ``torch.compile`` guards
only what the code read."""


@dataclass
class AttributeWrites:
    """Each written attribute: ``(module, name, value before the trace, value after it)``."""

    writes: list[tuple[Any, str, Any, Any]] = field(default_factory=list)
    tensors: list[tuple[Any, str, Any]] = field(default_factory=list)
    """Attributes set to a traced tensor: ``(module, name, value before the trace)``; their values are outputs."""
    last_set: list[Any] = field(default_factory=list)
    """The eager tensor each of ``tensors`` was set to by the last call (None before the first)."""
    unguarded: set[tuple[int, str]] = field(default_factory=set)
    """The writes the trace made before reading the attribute (``UNGUARDED``): ``hold`` does not check them."""
    numbers: list[bool] = field(default_factory=list)
    """Which of ``tensors`` the trace set to a ``DynamicInt`` (a counter's ``+= 1``): each call sets the Python int."""
    reads: list[tuple[Any, str, Any]] = field(default_factory=list)
    """Plain objects' attributes the trace read and left (``READ``) and the plain attributes of the modules it called
    (``module_reads``): ``(object, name, value)``, guarded."""
    namespace: Any = None
    """The globals, closure variables and container items the function reads (``runtime/namespace_reads.py``'s
    ``NamespaceReads``), guarded, and those it set, replayed; None where it reads none."""
    stores: Any = None
    """The stores of traced tensors into the dicts and lists it reaches (``runtime/container_stores.py``'s
    ``ContainerStores``), guarded and replayed after each call; None where it made none."""

    @classmethod
    def of(cls, context: TraceContext) -> "AttributeWrites":
        writes, tensors = [], []
        for module, name, before in context.attribute_writes.values():
            after = module.__dict__.get(name, MISSING)
            if is_traced_tensor(after):
                tensors.append((module, name, before))
                continue
            kept = eager_constants(after) if holds_traced_tensor(after) else None
            if kept is not None:  # torchvision's self.cell_anchors = [a.to(dtype) for a in ...]: their values
                set_attribute(module, name, kept)
                after = kept
            writes.append((module, name, before, after))
        numbers = [isinstance(module.__dict__.get(name), DynamicInt) for module, name, _ in tensors]
        reads = list(READ.get(context, {}).values())
        reads += module_reads(context)
        from kiln.runtime.container_stores import CONTAINER_STORES  # lazily: they build on this file
        from kiln.runtime.namespace_reads import NAMESPACE_READS

        stores = CONTAINER_STORES.get(context)
        return cls(writes, tensors, [None] * len(tensors), set(UNGUARDED.get(context, ())), numbers, reads,
                   NAMESPACE_READS.get(context), stores if stores is not None and (stores.stores or stores.wholes) else None)

    def traced_values(self) -> list[Any]:
        """The traced tensors' values (the graph's outputs for them); each attribute gets its value from before the
        trace back meanwhile (the trace's tensor has no values outside it)."""
        values = []
        for module, name, before in self.tensors:
            values.append(module.__dict__[name].value)
            set_attribute(module, name, before)
        return values + (self.stores.traced_values() if self.stores is not None else [])

    def hold(self) -> bool:
        """Whether every written attribute holds its value from before the trace (what the trace read); one set to a
        tensor may also hold what the last call set it to."""
        if not self.reads_hold():
            return False
        if not all(holds_value(module.__dict__.get(name, MISSING), before) for module, name, before, _ in self.writes
                   if (id(module), name) not in self.unguarded):
            return False
        current = [module.__dict__.get(name, MISSING) for module, name, _ in self.tensors]
        return all(holds_value(value, before) or value is last or (id(module), name) in self.unguarded
                   for value, (module, name, before), last in zip(current, self.tensors, self.last_set))

    def reads_hold(self) -> bool:
        """Whether each plain object's attribute the trace read holds the value it read (``cfg.scale``)."""
        return (all(holds_value(vars(owner).get(name, MISSING), value) for owner, name, value in self.reads)
                and (self.namespace is None or self.namespace.hold()) and (self.stores is None or self.stores.hold()))

    def replayed(self, outputs: Sequence[Any]) -> Sequence[Any]:
        """Leave each attribute as the trace did, those set to a tensor to an eager one holding its value in this
        call's ``outputs`` (their last); returns the other outputs."""
        from kiln.frontend.eager_values import eager_leaf  # lazily: the tensor values build on the trace

        for module, name, _, after in self.writes:
            set_attribute(module, name, after)
        if self.namespace is not None:
            self.namespace.replay()
        if self.stores is not None:  # the container stores' outputs come last
            first = len(outputs) - self.stores.outputs
            self.stores.replay(outputs[first:])
            outputs = outputs[:first]
        if not self.tensors:
            return outputs
        first = len(outputs) - len(self.tensors)
        for index, ((module, name, _), array) in enumerate(zip(self.tensors, outputs[first:], strict=True)):
            if self.numbers[index]:
                set_attribute(module, name, int(array))
                continue
            self.last_set[index] = eager_leaf(np.array(array))
            set_attribute(module, name, self.last_set[index])
        return outputs[:first]

    def names(self) -> str:
        return ", ".join(f"{type(module).__name__}.{name}" for module, name, _, _ in self.writes)

    def changed_read_names(self) -> str:
        """The attributes read whose values differ now from those the trace read (``VAE_gumbel.temp``), named for a
        recompile-limit message."""
        names = [f"{type(owner).__name__}.{name}" for owner, name, value in self.reads
                 if not holds_value(vars(owner).get(name, MISSING), value)]
        names += self.namespace.changed_names() if self.namespace is not None else []
        return ", ".join(names + (self.stores.changed_names() if self.stores is not None else []))


def is_traced_tensor(value: Any) -> bool:
    """Whether ``value`` is a tensor with no values outside the trace (one the trace computed)."""
    from kiln.frontend.eager_values import ARRAYS
    from kiln.frontend.tensor import Tensor

    return isinstance(value, Tensor) and "_value" in value.__dict__ and value.__dict__["_value"] not in ARRAYS


def holds_traced_tensor(value: Any, seen: set[int] | None = None) -> bool:
    """Whether ``value`` is a tensor the trace computed, or a dict, list or tuple holding one at any depth."""
    if is_traced_tensor(value):
        return True
    seen = set() if seen is None else seen
    if not isinstance(value, (dict, list, tuple)) or id(value) in seen:
        return False
    seen.add(id(value))
    return any(holds_traced_tensor(item, seen) for item in (value.values() if isinstance(value, dict) else value))


NUMPY_SCALARS = (np.bool_, np.integer, np.floating)
"""NumPy's number scalars: an attribute set by NumPy math (``model.temp = np.maximum(temp * np.exp(-r * i), t_min)``,
the Gumbel-softmax VAE's annealing) holds one, and a trace bakes it in as a constant as it does a Python number."""


def guardable(value: Any) -> bool:
    """A value a read guards on: a number (a NumPy scalar too), string, None or a tuple of them, and a counter read
    as a number that changes (``DynamicInt``); a tensor read is lifted instead, and an object is guarded by its own
    attributes."""
    if isinstance(value, tuple):
        return all(guardable(item) for item in value)
    return (value is None or type(value) in (bool, int, float, str) or isinstance(value, NUMPY_SCALARS)
            or isinstance(value, DynamicInt))


def module_reads(context: TraceContext) -> list[tuple[Any, str, Any]]:
    """``(module, name, value)`` for each public module attribute the trace read (``self.scale``,
    ``self.temperature``: ``frontend/module_attribute_reads.py``) that holds a ``guardable`` value and that it did not
    set, on a module made before the trace: guarded, as ``torch.compile`` guards the module attributes its code reads
    (one it never reads, ``model.last_loss``, may change freely). ``training`` is the modes' guard's."""
    reads = []
    for (key, name), module in context.module_attribute_reads.items():
        value = vars(module).get(name, MISSING)
        if (name != "training" and key not in context.modules_made and (key, name) not in context.attribute_writes
                and guardable(value)):
            reads.append((module, name, value))
    return reads


def holds_value(value: Any, before: Any) -> bool:
    """Whether an attribute's ``value`` now is what the trace found there: the same value, or any int for one it read
    as a ``DynamicInt``."""
    return type(value) is int if isinstance(before, DynamicInt) else same_value(value, before)


def eager_constant(value: Any) -> Any:
    """The eager tensor of a traced tensor computed from constants alone (``torch.hann_window(n)``), else None."""
    from kiln.frontend.tensor import Tensor  # lazily: the tensor values build on the trace
    from kiln.runtime.eager import constant_leaf

    leaf = constant_leaf(value.value) if is_traced_tensor(value) and type(value) is Tensor else None
    return None if leaf is None else Tensor(leaf)


def eager_constants(value: Any) -> Any:
    """A list or tuple of traced tensors computed from constants alone as one of their eager tensors (anything else
    in it as it is), else None."""
    if type(value) not in (list, tuple):
        return None
    items = [eager_constant(item) if is_traced_tensor(item) else item for item in value]
    if any(item is None or holds_traced_tensor(item) for item in items):
        return None
    return type(value)(items)


def same_value(value: Any, expected: Any) -> bool:
    """Equal numbers (NumPy scalars of one type too), strings, None and tuples of them, eager tensors of equal values
    (and lists and tuples of them: a set of anchors re-made at each call); anything else only itself."""
    if value is expected:
        return True
    if type(value) is list and type(expected) is list or type(value) is tuple and type(expected) is tuple:
        return len(value) == len(expected) and all(same_value(a, b) for a, b in zip(value, expected))
    array = _eager_tensor_array(value)
    if array is not None:
        return _equal_arrays(array, _eager_tensor_array(expected))
    if type(value) is not type(expected) or not isinstance(value, (int, float, str, tuple, *NUMPY_SCALARS)):
        return False
    try:
        return bool(value == expected)
    except Exception:  # a tuple holding arrays: compared by identity above
        return False


def _eager_tensor_array(value: Any) -> np.ndarray | None:
    from kiln.frontend.eager_values import ARRAYS  # lazily: the tensor values build on the trace
    from kiln.frontend.tensor import Tensor

    if type(value) is not Tensor or "_stale" in value.__dict__:
        return None
    return ARRAYS.get(value.__dict__.get("_value"))


def _equal_arrays(array: np.ndarray, other: np.ndarray | None) -> bool:
    return (other is not None and array.dtype == other.dtype and array.shape == other.shape
            and bool(np.array_equal(array, other, equal_nan=True)))


__all__ = ["AttributeWrites", "MISSING", "READ", "UNGUARDED", "eager_constant", "eager_constants", "guardable", "holds_traced_tensor", "holds_value",
           "is_traced_tensor", "module_reads", "same_value"]
