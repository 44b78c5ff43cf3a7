"""Values a ``kiln.compile``'d function's Python reads from its inputs, specialized and guarded, as ``torch.compile``
specializes on what it must know.

A trace is symbolic: ``int(torch.max(lengths).item())`` (torchaudio's Conformer making its padding mask),
``if mask.any():`` or ``if self.initialized.item() == 0:`` (Glow's ActNorm) ask for a value that exists only when the
graph runs. ``kiln.compile`` holds the call's arrays, though. Where such a value is computed from the call's
arguments, the eager tensors it lifted, or modules' buffers and frozen parameters, through at most ``MAX_OPS`` ops,
the trace evaluates it on them (the NumPy backend's kernels, the CPU reference, as ``frontend/trace_known_values.py``
does for constants) and goes on with that number. The graph is then right only for inputs giving that value, so the ops that
computed it are kept as a guard: each later call recomputes it from its own inputs and, where it differs, traces
again (a variant per value, up to the compile's ``recompile_limit``).

```python
@kiln.compile
def padded(x, lengths):
    width = int(lengths.max())                 # 5 when traced: the graph slices x[:, :5]
    return x[:, :width]
padded(x, kiln.tensor([3, 5]))                 # traced, guard: max(lengths) == 5
padded(x, kiln.tensor([5, 2]))                 # the guard holds: the same graph
padded(x, kiln.tensor([4, 2]))                 # max is 4: traced again
```

Values computed from anything else stay refused: a trained parameter (it changes at every step: each call would
trace again), a random draw, a training step's gradients or optimizer state.

An ONNX export (``TraceContext.exporting``) takes a value read from the model's parameters and buffers, trained ones
too, as they are now, with no guard: the file holds those weights, as ``torch.onnx.export`` bakes the branch it took.
A value read from the export's inputs stays refused (the file must serve any input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.compiler.ops.registry import has_trait
from kiln.frontend.host_random_draws import refusing_host_random_draws
from kiln.frontend.trace_known_values import VALUE_PRESERVING, run_reference

MAX_OPS = 64
"""The most ops between the sources and a specialized value: a length, a flag, a count is a few ops away."""


@dataclass(frozen=True)
class _Step:
    name: str
    attrs: dict[str, Any]
    operands: tuple[int, ...]
    """Slots of the operands: the sources first, then each step's result in order."""
    result: tuple[int, int]
    """Which of the op's results this step keeps, and how many it has."""
    dtype: np.dtype


@dataclass(frozen=True)
class ValueProgram:
    """The ops computing one specialized value from its sources, copied out of the trace (the passes later rewrite
    the graph; the guard keeps what was traced)."""

    sources: tuple[Value, ...]
    constants: tuple[np.ndarray, ...]
    steps: tuple[_Step, ...]

    def run(self, sources: Sequence[np.ndarray]) -> np.ndarray | None:
        slots: list[Any] = [*sources, *self.constants]
        for step in self.steps:
            operands = [slots[k] for k in step.operands]
            if step.name in VALUE_PRESERVING:  # lengths.detach(), lengths.data: no kernel, the same values
                slots.append(operands[0])
                continue
            result = run_reference(step.name, step.attrs, operands, step.result, step.dtype)
            if result is None:
                return None
            slots.append(result)
        return slots[-1] if self.steps else slots[0]


def program_for(value: Value, is_source: Callable[[Value], bool]) -> ValueProgram | None:
    """The ops from the sources (inputs for which ``is_source``) and constants to ``value``, or None where it depends
    on another input or takes more than ``MAX_OPS`` ops."""
    order: list[Value] = []
    if not _collect(value, is_source, set(), order):
        return None
    sources = tuple(v for v in order if v.producer is None)
    constant_values = [v for v in order if _is_constant(v)]
    constants = tuple(np.asarray(v.producer.attrs["value"]) for v in constant_values)
    slots = {v: k for k, v in enumerate((*sources, *constant_values))}
    steps = []
    for v in order:
        if v in slots:
            continue
        op = v.producer
        slots[v] = len(slots)
        operands = tuple(slots[o] for o in op.operands)
        steps.append(_Step(op.name, dict(op.attrs), operands, (op.results.index(v), len(op.results)), v.type.dtype.numpy))
    return ValueProgram(sources, constants, tuple(steps)) if len(steps) <= MAX_OPS else None


def _collect(value: Value, is_source: Callable[[Value], bool], seen: set[Value], order: list[Value]) -> bool:
    """Add ``value``'s producers depth first (operands before results) to ``order``; False where a leaf is no source
    or an op is not pure (as ``trace_known_values`` refuses those)."""
    if value in seen:
        return True
    seen.add(value)
    op = value.producer
    if op is None and not is_source(value):
        return False
    if op is not None and not _is_constant(value):
        if len(seen) > 4 * MAX_OPS or not has_trait(op.name, "pure"):  # a comm op: not run again at each call
            return False
        if not all(_collect(o, is_source, seen, order) for o in op.operands):
            return False
    order.append(value)
    return True


def _is_constant(value: Value) -> bool:
    return value.producer is not None and value.producer.name == "tensor.constant"


@dataclass
class SpecializedValues:
    """One trace's sources (the graph inputs whose arrays the call holds) and the values specialized so far."""

    examples: dict[Value, np.ndarray]
    """Each source input's array in the traced call."""
    programs: list[ValueProgram] = field(default_factory=list)
    expected: list[np.ndarray] = field(default_factory=list)

    def value_of(self, value: Value) -> np.ndarray | None:
        """``value`` evaluated on the traced call's arrays (guarded from now on), or None where it cannot be."""
        program = program_for(value, lambda v: v in self.examples)
        result = None if program is None else program.run([self.examples[v] for v in program.sources])
        if result is not None:
            self.programs.append(program)  # type: ignore[arg-type]
            self.expected.append(np.array(result, copy=True))
        return result

    def add_source(self, value: Value, array: np.ndarray) -> None:
        """A graph input made during the trace (a lifted closure tensor, a parameter) and its array now."""
        self.examples.setdefault(value, np.asarray(array))

    def guards(self, feeds: Callable[[Value], Callable[..., np.ndarray]]) -> "ValueGuards":
        """The guards of the values specialized, each source read at a call by ``feeds(source)(arguments)``."""
        return ValueGuards([(program, [feeds(v) for v in program.sources], expected)
                            for program, expected in zip(self.programs, self.expected)])


@dataclass
class ValueGuards:
    """What a compiled variant checks before a call: each specialized value, recomputed from the call's arrays."""

    checks: list[tuple[ValueProgram, list[Callable[..., np.ndarray]], np.ndarray]] = field(default_factory=list)

    def hold(self, arguments: Sequence[np.ndarray]) -> bool:
        for program, readers, expected in self.checks:
            result = program.run([read(arguments) for read in readers])
            if result is None or result.shape != expected.shape or not np.array_equal(result, expected, equal_nan=True):
                return False
        return True

    def __bool__(self) -> bool:
        return bool(self.checks)


def guards_of(context: Any, arguments: Sequence[Value], lifted: Any) -> ValueGuards:
    """The guards of ``context``'s specialized values: a source is one of the call's ``arguments`` (read from the
    call's arrays), one of ``lifted`` (``LiftedTensors``: the closure tensor's array then) or a parameter (its array
    then)."""
    specializing = context.specializing
    if specializing is None or not specializing.programs:
        return ValueGuards()
    positions = {value: k for k, value in enumerate(arguments)}
    lifted_positions = {value: k for k, value in enumerate(context.lifting.inputs())} if context.lifting else {}

    def feeds(source: Value) -> Callable[..., np.ndarray]:
        if source in positions:
            return lambda call: call[positions[source]]
        if source in lifted_positions:
            return lambda call: lifted.arrays()[lifted_positions[source]]
        parameter = context.parameter_by_value[source]
        return lambda call: np.asarray(parameter.data)

    return specializing.guards(feeds)


def specialized_value(tensor: Any) -> np.ndarray | None:
    """The value of the traced ``tensor`` where a ``kiln.compile`` trace can specialize on it (see the module's
    docstring), else None."""
    from kiln.frontend.trace import TraceContext  # lazily: the trace builds on the tensors

    specializing = TraceContext.current().specializing
    return None if specializing is None else specializing.value_of(tensor.value)


def specializing_on(fn: Callable[..., Any], arrays: Sequence[Any]) -> Callable[..., Any]:
    """``fn`` traced with its inputs' values known to be ``arrays`` (``TraceContext.specializing``), and the parameters
    and buffers it reads known as their arrays; the caller names it as ``fn``. A draw from ``random`` or ``np.random``
    in it is refused (``frontend/host_random_draws.py``)."""
    def traced(*inputs: Any) -> Any:
        from kiln.frontend.trace import TraceContext  # lazily: the trace builds on the tensors

        context = TraceContext.current()
        context.specializing = SpecializedValues({t.value: np.asarray(a) for t, a in zip(inputs, arrays)})
        with refusing_host_random_draws():  # a draw of np.random would be a constant of the graph
            return fn(*inputs)

    return traced


__all__ = ["SpecializedValues", "ValueGuards", "ValueProgram", "guards_of", "specialized_value", "specializing_on"]
