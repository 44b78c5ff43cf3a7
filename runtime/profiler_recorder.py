"""What ``kiln.profiler`` records while a trace is active, and the hooks' one check.

The hooks (``EagerContext.emit``, ``Executable.__call__``) read ``RECORDING.recorder``: ``None`` while no profiler
records, so the cost of profiling support is that one attribute read and comparison per eager op and per executable
call. While a ``Recorder`` is set, each eager op, each executable call and each ``record_function`` block is an
``Event`` opened on its thread's stack: its parent is the event open around it, and its duration is added to the
parent's children time, so self time is total minus children, exactly.

Inside a compiled NumPy executable each op of the lowered graph (a fused group is one op) is an event too: the
recorder runs the executable's timed build (``Executable.timed_build``: the same generated code with a clock read
after each op, compiled on the first call under a profiler, with its own buffers; that compilation runs before the
call's event opens, so it counts in the enclosing event's self time) and lays the measured op times end
to end, ending where the call ended (the time before the first op, binding dims and fetching buffers, is the call's
self time).
The timed build writes each op's time into one list per executable: two threads calling the same executable at
once under a profiler may read each other's op times (the calls' own events stay right).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


@dataclass(eq=False)
class Event:
    """One timed region: an eager op, an executable call, an op inside one, or a ``record_function`` block."""

    name: str
    kind: str
    """``"eager_op"``, ``"executable"``, ``"compiled_op"`` or ``"user_annotation"``."""
    start_ns: int
    thread: int
    parent: "Event | None" = None
    end_ns: int = 0
    children_ns: int = 0
    """The summed durations of the events directly inside this one (same thread)."""
    input_shapes: list[list[int]] = field(default_factory=list)
    """The operands' shapes (with ``record_shapes=True``)."""
    own_bytes: int = 0
    """Bytes of the result arrays this event created (with ``profile_memory=True``; see ``result_bytes``)."""
    children_bytes: int = 0
    stack: list[str] = field(default_factory=list)
    """The user's source line that ran it (with ``with_stack=True``, eager ops and ``record_function`` blocks)."""
    children: list["Event"] = field(default_factory=list)

    @property
    def key(self) -> str:
        """What ``key_averages`` groups by: the name, with every ``ProfilerStep#<n>`` as ``ProfilerStep*`` (torch's)."""
        return "ProfilerStep*" if self.name.startswith("ProfilerStep#") else self.name

    @property
    def count(self) -> int:
        return 1

    @property
    def cpu_time_total(self) -> float:
        """Microseconds from start to end, children included (as torch's ``FunctionEvent.cpu_time_total``)."""
        return (self.end_ns - self.start_ns) / 1e3

    @property
    def self_cpu_time_total(self) -> float:
        """Microseconds in this event outside the events inside it."""
        return (self.end_ns - self.start_ns - self.children_ns) / 1e3

    @property
    def cpu_time(self) -> float:
        return self.cpu_time_total

    @property
    def cpu_memory_usage(self) -> int:
        return self.own_bytes + self.children_bytes

    @property
    def self_cpu_memory_usage(self) -> int:
        return self.own_bytes

    @property
    def cpu_parent(self) -> "Event | None":
        return self.parent

    @property
    def cpu_children(self) -> list["Event"]:
        return self.children


class Recorder:
    """Events of one trace (from ``start_trace`` to ``stop_trace``), every thread's."""

    def __init__(self, record_shapes: bool = False, profile_memory: bool = False, with_stack: bool = False):
        self.record_shapes, self.profile_memory, self.with_stack = record_shapes, profile_memory, with_stack
        self.events: list[Event] = []
        self._stacks = threading.local()
        self._lock = threading.Lock()

    def open(self, name: str, kind: str, shapes: list[list[int]] | None = None) -> Event:
        stack = self._stack()
        parent = stack[-1] if stack else None
        event = Event(name, kind, 0, threading.get_ident(), parent, input_shapes=shapes or [])
        if self.with_stack and kind in ("eager_op", "user_annotation"):
            event.stack = _user_line()
        with self._lock:
            self.events.append(event)
        stack.append(event)
        event.start_ns = time.perf_counter_ns()  # last: the bookkeeping above is the parent's time, not this event's
        return event

    def close(self, event: Event) -> None:
        event.end_ns = time.perf_counter_ns()
        stack = self._stack()
        while stack and stack.pop() is not event:  # an event left open inside (an exception) ends with its parent
            pass
        _attach(event)

    def close_all(self) -> None:
        """End the events still open on this thread (a ``record_function`` the trace stops inside) at this moment."""
        stack = self._stack()
        while stack:
            self.close(stack[-1])

    def inside_eager_op(self) -> bool:
        stack = self._stack()
        return bool(stack) and stack[-1].kind == "eager_op"

    def eager_op(self, run: Callable[..., Any], name: str, operands: Sequence[Any], attrs: dict[str, Any]) -> Any:
        """``run(name, *operands, **attrs)`` (the eager context's emit) as one event named as torch names the op."""
        shapes = [list(value.type.shape) for value in operands] if self.record_shapes else None
        event = self.open(torch_op_name(name), "eager_op", shapes)
        try:
            result = run(name, *operands, **attrs)
        finally:
            self.close(event)
        if self.profile_memory:
            event.own_bytes = eager_result_bytes(result)
            _add_bytes(event)
        return result

    def executable_call(self, executable: Any, arrays: Sequence[Any]) -> tuple[Any, ...]:
        """Run ``executable``'s function on ``arrays`` as one event, with one child per op when it has a timed build."""
        shapes = [list(np.shape(array)) for array in arrays] if self.record_shapes else None
        timed = timed_function(executable)
        event = self.open(f"kiln::compiled @{executable.graph.name}", "executable", shapes)
        try:
            outputs = (timed[0] if timed else executable.function)(*arrays)
        finally:
            self.close(event)
        if timed is not None:
            self._add_op_events(event, executable.graph, timed[1], arrays)
        if self.profile_memory:
            event.own_bytes = result_bytes(outputs)
            _add_bytes(event)
        return outputs

    def _add_op_events(self, call: Event, graph: Any, op_seconds: list[float], arrays: Sequence[Any]) -> None:
        """One event per op of the lowered graph, its measured time laid end to end up to the call's end."""
        durations = [round(seconds * 1e9) for seconds in op_seconds]
        start = max(call.start_ns, call.end_ns - sum(durations))
        dims = bound_dims(graph, arrays) if self.record_shapes else {}
        with self._lock:
            for op, duration in zip(graph.ops, durations):
                end = min(start + duration, call.end_ns)
                shapes = [concrete_shape(value.type.shape, dims) for value in op.operands] if self.record_shapes else []
                event = Event(compiled_op_name(op), "compiled_op", start, call.thread, call, end, input_shapes=shapes)
                self.events.append(event)
                _attach(event)
                start = end

    def _stack(self) -> list[Event]:
        stack = getattr(self._stacks, "events", None)
        if stack is None:
            stack = self._stacks.events = []
        return stack


class _Recording:
    """The recorder the hooks send events to; ``None`` while no profiler records."""

    recorder: Recorder | None = None


RECORDING = _Recording()


def _attach(event: Event) -> None:
    parent = event.parent
    if parent is not None:
        parent.children_ns += event.end_ns - event.start_ns
        parent.children.append(event)


def _add_bytes(event: Event) -> None:
    parent = event.parent
    while parent is not None:
        parent.children_bytes += event.own_bytes
        parent = parent.parent


def timed_function(executable: Any) -> tuple[Callable[..., Any], list[float]] | None:
    """The executable's timed build (function, per-op seconds), compiled on first use; None if its backend has none."""
    timed = getattr(executable, "timed", None)
    if timed is None and executable.timed_build is not None:
        timed = executable.timed = executable.timed_build()
    return timed


def result_bytes(arrays: Sequence[Any]) -> int:
    """Bytes of the arrays that own their memory: a view of an input or of another result counts nothing."""
    return sum(array.nbytes for array in arrays if isinstance(array, np.ndarray) and array.base is None)


def eager_result_bytes(result: Any) -> int:
    from kiln.frontend.eager_values import ARRAYS  # lazily: the frontend imports the runtime

    values = result if isinstance(result, tuple) else (result,)
    return result_bytes([ARRAYS.get(value) for value in values])


def bound_dims(graph: Any, arrays: Sequence[Any]) -> dict[str, int]:
    """The graph's symbolic dims as these arrays bind them."""
    dims: dict[str, int] = {}
    for value, array in zip(graph.inputs, arrays):
        for dim, size in zip(value.type.shape, np.shape(array)):
            if isinstance(dim, str):
                dims.setdefault(dim, size)
    return dims


def concrete_shape(shape: Sequence[Any], dims: dict[str, int]) -> list[Any]:
    from kiln.compiler.ir.types import dim_value

    try:
        return [dim_value(dim, dims) for dim in shape]
    except (KeyError, ValueError, TypeError):
        return list(shape)  # a dim no input binds (a data-dependent size): its symbol


def compiled_op_name(op: Any) -> str:
    """An op of a compiled graph by its IR name; a fused group with its members: ``fused.matmul(matmul+add+relu)``."""
    members = op.attrs.get("ops") if op.name.startswith("fused.") else None
    if not members:
        return op.name
    return f"{op.name}({'+'.join(member.split('.')[-1] for member in members)})"


def _user_line() -> list[str]:
    from kiln.frontend.trace import user_location  # lazily: the frontend imports the runtime

    location = user_location()
    return [location.short] if location else []


TORCH_NAMES = {
    "tensor.add": "aten::add", "tensor.sub": "aten::sub", "tensor.mul": "aten::mul", "tensor.div": "aten::div",
    "tensor.matmul": "aten::matmul", "tensor.neg": "aten::neg", "tensor.exp": "aten::exp", "tensor.log": "aten::log",
    "tensor.sqrt": "aten::sqrt", "tensor.rsqrt": "aten::rsqrt", "tensor.tanh": "aten::tanh", "tensor.relu": "aten::relu",
    "tensor.sigmoid": "aten::sigmoid", "tensor.pow": "aten::pow", "tensor.abs": "aten::abs", "tensor.maximum": "aten::maximum",
    "tensor.minimum": "aten::minimum", "tensor.where": "aten::where", "tensor.reduce_sum": "aten::sum",
    "tensor.reduce_mean": "aten::mean", "tensor.reduce_max": "aten::amax", "tensor.reduce_min": "aten::amin",
    "tensor.transpose": "aten::permute", "tensor.reshape": "aten::reshape", "tensor.broadcast_to": "aten::expand",
    "tensor.concat": "aten::cat", "tensor.cast": "aten::to", "tensor.greater": "aten::gt", "tensor.less": "aten::lt",
    "tensor.equal": "aten::eq", "tensor.constant": "aten::scalar_tensor", "nn.softmax": "aten::softmax",
    "nn.log_softmax": "aten::log_softmax", "nn.cross_entropy": "aten::cross_entropy_loss", "tensor.conv2d": "aten::conv2d",
    "nn.layer_norm": "aten::layer_norm", "tensor.cos": "aten::cos", "tensor.sin": "aten::sin", "tensor.erf": "aten::erf",
    "tensor.floor": "aten::floor", "tensor.clip": "aten::clamp", "tensor.argmax": "aten::argmax", "tensor.slice": "aten::slice",
    "tensor.squeeze": "aten::squeeze", "tensor.random_uniform": "aten::uniform_", "nn.gelu": "aten::gelu", "nn.dropout": "aten::dropout", "nn.batch_norm": "aten::batch_norm",
}
"""Eager ops named as torch's profiler names the op a PyTorch program calls there; others keep kiln's op name."""


def torch_op_name(name: str) -> str:
    return TORCH_NAMES.get(name, name)

