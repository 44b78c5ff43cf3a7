"""Eager mode: outside a trace, PyTorch-style code runs op by op, as in PyTorch.

```python
model = MLP()
optimizer = kiln.optim.Adam(model.parameters(), lr=1e-3)
for x, y in loader:
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)   # each op runs now: loss.item() is a number
    loss.backward()                       # parameter.grad, from the compiled backward of this graph
    optimizer.step()                      # the optimizer's compiled update, from .grad
```

Every op is built exactly as a trace builds it (same shape checks, same
errors naming the user's line) and then run at once by the NumPy backend: a
one-op graph compiled once per op signature and cached. An op seen before
(same name, attributes and operand types: ``known_signature``) skips the
builder and its shape rule: the first sighting ran them, raised any error,
and left its result types and function to reuse. A constant (each Python
number an op meets: ``x * 2.0``) is typed by its array, with no builder either
(``_emit_constant``). ``apply``'s common case (fresh tensors and Python
numbers needing no promotion) comes in through ``emit_values`` and
``emit_constant`` with the user's line already found: one stack walk for the
op and its constants. The op's results keep their arrays
(``frontend/eager_values.py``) and a link to the op, which links to its
operands: that chain is the autograd graph, freed with the tensors that hold
it, as PyTorch's. Nothing is kept in a global tape.

``loss.backward()`` rebuilds the chain as one graph, differentiates it with
the autodiff pass and runs the compiled result (``runtime/eager_backward.py``).
A training step compiled with ``kiln.compile_train_step`` does the same work
as one fused function and is the fast path; eager mode is for porting,
debugging and notebooks.
"""

from __future__ import annotations

import threading
from typing import Any, Hashable, Sequence

import numpy as np

from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.passes.cse import hashable_attr
from kiln.frontend import init
from kiln.frontend.eager_values import ARRAYS, FROZEN_READS, PARAMETERS, array_type, eager_leaf, updates
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.module import ArrayLeaf, Parameter
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_array import plain
from kiln.frontend.trace import SourceLocation, TraceContext, located_error, user_location
from kiln.frontend.version_counter import WRITES_RUNNING
from kiln.runtime.executable import Executable
from kiln.runtime.profiler_recorder import RECORDING
from kiln.runtime.saved_tensor_hooks import HOOKS as SAVED_HOOKS, pack_saved


class EagerContext(TraceContext):
    """The context ``TraceContext.current()`` gives outside any trace: each op it builds runs at once."""

    eager = True

    def __init__(self) -> None:
        super().__init__("eager")

    def emit(self, name: str, *operands: Value, **attrs: Any) -> Any:
        result = self._run(name, operands, attrs)
        if WRITES_RUNNING:  # an eager in-place write's own ops, which its version count exempts (version_counter.py)
            WRITES_RUNNING[-1].append(result)
        if SAVED_HOOKS:  # under saved_tensors_hooks: pack what this op's backward reads (saved_tensor_hooks.py)
            pack_saved(self.grad_enabled, result)
        return result

    def emit_values(self, name: str, operands: list[Value], attrs: dict[str, Any], location: SourceLocation | None) -> Any:
        """``emit(name, *operands, **attrs)`` from ``apply``'s common case, which found the user's ``location`` (the
        line ``emit`` would find): an op seen before, with no profiler, in-place write or saved-tensor hooks running,
        is built and run here, without packing the arguments again; the rest goes through ``emit``."""
        if RECORDING.recorder is not None or WRITES_RUNNING or SAVED_HOOKS or name == "tensor.constant":
            return self.emit(name, *operands, **attrs)
        arrays = _arrays_of(name, operands)
        key = known_signature(name, attrs, operands)
        known = _KNOWN.get(key) if key is not None else None
        if known is None:
            return self.emit(name, *operands, **attrs)
        return self._run_known(name, operands, arrays, known, location)

    def emit_constant(self, array: np.ndarray, location: SourceLocation | None) -> Value:
        """``emit("tensor.constant", value=array)`` (the constant a Python number an eager op meets becomes) where the
        user's ``location`` is known."""
        attrs = {"value": array}
        if RECORDING.recorder is not None or WRITES_RUNNING or SAVED_HOOKS or not _plain_constant(attrs):
            return self.emit("tensor.constant", **attrs)
        return self._constant(attrs, location)

    def _run(self, name: str, operands: tuple[Value, ...], attrs: dict[str, Any]) -> Any:
        """Run op ``name`` at once; its result (or results)."""
        if RECORDING.recorder is not None and not RECORDING.recorder.inside_eager_op():  # kiln.profiler: one event
            return RECORDING.recorder.eager_op(self.emit, name, operands, attrs)
        if name == "tensor.constant":
            constant = self._emit_constant(attrs)
            if constant is not None:
                return constant
        arrays = _arrays_of(name, operands)
        key = known_signature(name, attrs, operands)
        known = _KNOWN.get(key) if key is not None else None
        if known is None:
            return self._emit_first(name, key, operands, arrays, attrs)
        return self._run_known(name, operands, arrays, known, user_location())

    def _run_known(self, name: str, operands: Sequence[Value], arrays: list[np.ndarray],
                   known: tuple[dict[str, Any], tuple[TensorType, ...], Executable], location: SourceLocation | None) -> Any:
        """Run an op seen before (its shape rule passed then and gives these types, its function is compiled), made
        at the user's ``location``."""
        full_attrs, result_types, executable = known
        builder = self.builder
        builder.location = location.short if location else None
        return _run_detached(_detached_op(name, operands, result_types, full_attrs, builder), executable, arrays)

    def _emit_constant(self, attrs: dict[str, Any]) -> Value | None:
        """A constant (each Python number an eager op meets is one) built as the builder builds it: one
        ``tensor.constant`` op holding the array, typed as the array; None where the builder must judge (an attribute
        other than one ndarray ``value``, a dtype kiln lacks: its error names the user's line)."""
        return self._constant(attrs, user_location()) if _plain_constant(attrs) else None

    def _constant(self, attrs: dict[str, Any], location: SourceLocation | None) -> Value:
        """The constant of ``attrs`` that ``_plain_constant`` passed, made at ``location`` and run."""
        builder = self.builder
        builder.location = location.short if location else None
        return _run_detached(_detached_op("tensor.constant", (), (array_type(attrs["value"]),), attrs, builder), None, [])

    def _emit_first(self, name: str, key: Hashable | None, operands: tuple[Value, ...], arrays: list[np.ndarray],
                    attrs: dict[str, Any]) -> Any:
        """Build the op as a trace does (its shape checks and errors), run it, and remember its types under ``key``."""
        result = super().emit(name, *operands, **attrs)
        op = self.graph.ops.pop()  # the graph keeps nothing: the results link to the op, the op to its operands
        for index, operand in enumerate(op.operands):
            operand.uses.remove((op, index))
        if op.name == "tensor.constant":
            _run_detached(op, None, arrays)
            return result
        executable = executable_of(op)
        if key is not None:
            if len(_KNOWN) >= EXECUTABLES_LIMIT:
                del _KNOWN[next(iter(_KNOWN))]
            _KNOWN[key] = (dict(op.attrs), tuple(value.type for value in op.results), executable)  # its own copy
        _run_detached(op, executable, arrays)
        return result

    def without_gradient(self, value: Value) -> Value:
        """Under ``kiln.no_grad()``: a new leaf with the same array, so no chain is kept (as PyTorch's no_grad)."""
        leaf = Value(value.type, None, 0, value.name_hint)
        ARRAYS[leaf] = ARRAYS[value]
        return leaf

    def value_of(self, parameter: Parameter) -> Value:
        """A new leaf per read, holding the parameter's array as it is now (``.grad`` goes to the parameter)."""
        array = plain(parameter.data)
        value = Value(array_type(array), None, 0, self.parameter_names.get(id(parameter)))
        ARRAYS[value], PARAMETERS[value] = array, (parameter, updates(parameter))
        if not parameter.requires_grad:
            FROZEN_READS[value] = True  # no gradient reaches this read, even if the flag is set before backward()
        return value

    def current_value_of(self, parameter: Parameter) -> Value:
        return self.value_of(parameter)  # buffer updates are written at once (update_buffer)

    def update_buffer(self, buffer: Parameter, value: Value) -> None:
        """A buffer's new value (BatchNorm's running statistics in training mode) is written now, as PyTorch's; the
        buffer may be a plain tensor standing in for one (``functional_call`` keeps a tensor whose storage no
        ``Buffer`` can share, an ``expand``ed or read-only one, as it is)."""
        write_in_place(buffer, ARRAYS[value])

    def random_seed(self) -> tuple[Value, int]:
        """A fresh seed per random op, drawn from kiln's generator (``kiln.manual_seed`` makes eager dropout repeat)."""
        seed = Value(_SEED_TYPE, None, 0, "rng_seed")
        ARRAYS[seed] = init.draw_seed()
        return seed, 0


def write_in_place(target: Tensor, array: np.ndarray) -> None:
    """``array`` written into ``target`` as PyTorch's in-place update of a buffer: a parameter's or buffer's own array
    (a tensor ``detach()`` gave is one too), or a plain eager tensor through ``copy_``, outside autograd."""
    if isinstance(target, ArrayLeaf):
        np.copyto(target.data, array, casting="same_kind")
        return
    with no_grad():
        target.copy_(eager_leaf(array))


_SEED_TYPE = TensorType((), DType.i64)
_KILN_NUMPY_DTYPES = frozenset(dtype.numpy for dtype in DType)


def _plain_constant(attrs: dict[str, Any]) -> bool:
    """Whether a ``tensor.constant``'s ``attrs`` are one ndarray ``value`` of a dtype kiln has (typed by the array)."""
    array = attrs.get("value")
    return len(attrs) == 1 and type(array) is np.ndarray and array.dtype in _KILN_NUMPY_DTYPES


def _arrays_of(name: str, operands: Sequence[Value]) -> list[np.ndarray]:
    """The operands' arrays; an operand without one (a traced tensor kept past its trace) is an error."""
    arrays = []
    for value in operands:
        array = ARRAYS.get(value)
        if array is None:
            raise _traced_operand_error(name)
        arrays.append(array)
    return arrays


def _traced_operand_error(name: str) -> Exception:
    return located_error(f"{name}: an operand is a traced tensor, which has no value outside its trace; return it from "
                         "the traced function (kiln.compile) instead of keeping it")


def _detached_op(name: str, operands: Sequence[Value], result_types: tuple[TensorType, ...], attrs: dict[str, Any],
                 builder: Builder) -> Op:
    """The op ``Op(name, (), result_types, attrs, ...)`` builds, its operands set without uses (the graph keeps
    nothing, as ``_emit_first`` leaves it); built slot by slot: a known op skips ``Op.__init__``'s operand walk."""
    op = Op.__new__(Op)
    op.name, op.operands, op.attrs = name, list(operands), dict(attrs)
    op.location, op.region = builder.location, builder.region
    if len(result_types) == 1:  # most ops: no comprehension to run
        op.results = [Value(result_types[0], op, 0)]
    else:
        op.results = [Value(result_type, op, index) for index, result_type in enumerate(result_types)]
    return op


def constant_leaf(value: Value) -> Value | None:
    """An eager leaf holding the array of the traced ``value``, if ``value`` is computed from constants alone (with
    static shapes); else None. Its ops run now, while the trace still holds them.

    PyTorch programs cache such tensors on a module during ``forward`` (word_language_model's
    ``self.src_mask = self._generate_square_subsequent_mask(len(src))``); traced by ``kiln.compile_train_step``,
    the cached mask becomes this leaf (``Module.__setattr__``), so eager code after the step may keep using it.
    """
    if not all(isinstance(dim, int) for dim in value.type.shape):
        return None
    try:
        array = _constant_array(value, {})
    except RecursionError:  # a chain deeper than Python's stack: an activation, not a mask
        return None
    if array is None:
        return None
    leaf = Value(value.type, None, 0, value.name_hint)
    ARRAYS[leaf] = array
    return leaf


def _constant_array(value: Value, seen: dict[Value, np.ndarray | None]) -> np.ndarray | None:
    """``value``'s array if it is computed from constants and eager leaves alone, else None; ``seen`` holds the values
    already walked, so a graph whose values are read many times (a decoder loop's states, each cached on its module by
    ``Module.__setattr__``) is walked once, not once per path, and the walk stops at the first operand without one."""
    if value in seen:
        return seen[value]
    seen[value] = None
    op = value.producer
    if op is None:
        seen[value] = ARRAYS.get(value)  # an eager leaf has its array; a graph input (parameter, batch, seed) has none
    elif op.name == "tensor.constant":
        seen[value] = np.asarray(op.attrs["value"])
    else:
        arrays = []
        for operand in op.operands:
            arrays.append(_constant_array(operand, seen))
            if arrays[-1] is None:
                return None
        seen[value] = run_op(op, arrays)[value.index]
    return seen[value]


_EXECUTABLES: dict[Hashable, Executable] = {}
EXECUTABLES_LIMIT = 4096
"""One-op functions kept (by op signature: a new batch size is a new signature); the oldest goes first."""
_BACKEND = NumpyBackend()
_BACKEND.plan_memory = False  # one allocating kernel per op: results never share a reused buffer


def run_op(op: Op, arrays: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """``op``'s result arrays for these operand arrays (a constant is its own value)."""
    if op.name == "tensor.constant":
        return (op.attrs["value"],)
    return tuple(np.asarray(result) for result in executable_of(op).function(*arrays))  # the op's types are the arrays'


def executable_of(op: Op) -> Executable:
    """The one-op function for ``op``'s signature, compiled on first use."""
    key = op_signature(op)
    executable = _EXECUTABLES.get(key)
    if executable is None:
        if len(_EXECUTABLES) >= EXECUTABLES_LIMIT:
            del _EXECUTABLES[next(iter(_EXECUTABLES))]
        executable = _EXECUTABLES[key] = _BACKEND.compile(_one_op_graph(op))
    return executable


_NO_RESULTS: tuple[Value, ...] = ()
"""What every eager op's ``results`` is once run: empty and immutable (a new empty list per op was one more object for
the cycle collector to track, and a gen-0 collection comes every ~700 of them)."""


def _run_detached(op: Op, executable: Executable | None, arrays: list[np.ndarray]) -> Any:
    """Run ``op`` now (a constant is its own value), keep its results' arrays and unlink the results from it; returns
    the result, or the tuple of them (as ``Builder.op``)."""
    results = op.results
    if executable is None:
        ARRAYS[results[0]] = op.attrs["value"]
    else:
        for value, array in zip(results, executable.function(*arrays)):
            ARRAYS[value] = np.asarray(array)  # the op's types are the arrays': no check
    op.results = _NO_RESULTS  # type: ignore[assignment]  # no value -> op -> results -> value cycle: arrays go with tensors
    return results[0] if len(results) == 1 else tuple(results)


def op_signature(op: Op) -> Hashable:
    """What a compiled one-op graph depends on: the op, its attributes and its operands' types."""
    attrs = tuple([(key, value if type(value) in _AS_THEY_ARE else hashable_attr(value)) for key, value in op.attrs.items()])
    return op.name, attrs, tuple([value.type for value in op.operands])


_AS_THEY_ARE = frozenset({int, bool, str, type(None)})
"""Attribute types ``hashable_attr`` gives back unchanged (asked first: the backward keys every op of a chain)."""


_KNOWN: dict[Hashable, tuple[dict[str, Any], tuple[TensorType, ...], Executable]] = {}
"""Per ``known_signature``: the op's full attributes, result types and one-op function, from its first sighting."""


def known_signature(name: str, attrs: dict[str, Any], operands: tuple[Value, ...]) -> Hashable | None:
    """What an eager op's build depends on: its name, the attributes as given (typed: ``1``, ``1.0``, ``True`` and
    ``-0.0`` apart) and its operands' types; None where an attribute is not a plain value (an array: a constant) or
    a ``name_hint`` is given."""
    if not attrs:
        return name, (), tuple([value.type for value in operands])  # most ops (add, matmul, relu...) have none
    if "name_hint" in attrs:
        return None
    attr_keys = []
    for key, value in attrs.items():
        kind = type(value)
        if kind in _PLAIN_ATTRS:  # most attributes (an axis, a flag, a dtype): _attr_key's first case, inline
            attr_keys.append((key, (kind, value)))
            continue
        attr_key = _attr_key(value)
        if attr_key is None:
            return None
        attr_keys.append((key, attr_key))
    return name, tuple(attr_keys), tuple([value.type for value in operands])


_PLAIN_ATTRS = frozenset({int, bool, str, type(None), DType})


def _attr_key(value: Any) -> Hashable | None:
    kind = type(value)
    if kind in _PLAIN_ATTRS:
        return kind, value
    if kind is float:
        return kind, value.hex()
    if kind is tuple or kind is list:
        if all([type(item) is int for item in value]):
            return kind, tuple(value)  # axes, a permutation, a shape: items typed alike (apart from the general form's)
        items = tuple([_attr_key(item) for item in value])
        return None if None in items else (kind, items)
    return None


def _one_op_graph(op: Op) -> Graph:
    graph = Graph(op.name.replace(".", "_"))
    inputs = [graph.add_input(value.type) for value in op.operands]
    results = Builder(graph).op(op.name, *inputs, **op.attrs)
    graph.outputs = list(results) if isinstance(results, tuple) else [results]
    return graph


_LOCAL = threading.local()


def eager_context() -> TraceContext:
    """This thread's eager context (one per thread, as trace contexts are)."""
    context = getattr(_LOCAL, "context", None)
    if context is None:
        context = _LOCAL.context = EagerContext()
    return context


def install() -> None:
    """Make ``TraceContext.current()`` give the eager context outside a trace (``kiln.runtime`` does it on import)."""
    TraceContext.fallback = eager_context


__all__ = ["EagerContext", "constant_leaf", "eager_context", "executable_of", "install", "known_signature", "op_signature", "run_op",
           "write_in_place"]
