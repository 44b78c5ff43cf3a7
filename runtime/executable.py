"""A compiled graph, callable on arrays, that checks what it is given.

Symbolic dims (``N``) are bound from the arrays on each call, so one
executable serves every batch size; a wrong rank, dim or dtype gets an
``InputError`` naming the input, the expected type and what was received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from kiln.compiler.errors import InputError
from kiln.compiler.ir.core import Graph, Op
from kiln.compiler.ir.printer import assign_names
from kiln.compiler.ir.types import TensorType
from kiln.frontend.torch_array import plain
from kiln.runtime.profiler_recorder import RECORDING


class _Resident:
    """Passed for a donated input: "use the value your last call produced for it" (it stays on the device)."""

    def __repr__(self) -> str:
        return "RESIDENT"


RESIDENT = _Resident()


class Executable:
    """``executable(*arrays) -> tuple of arrays`` for one graph on one backend."""

    def __init__(self, graph: Graph, function: Callable[..., tuple[Any, ...]], backend: str, source: str = "",
                 op_seconds: list[float] | None = None):
        self.graph = graph
        self.function = function
        self.backend = backend
        self.source = source
        """The generated code, for inspection."""
        self.op_seconds = op_seconds
        """A profiling build's wall time of each op of ``graph`` in the last call (the generated code writes it)."""
        self.timed_build: Callable[[], tuple[Callable[..., tuple[Any, ...]], list[float]]] | None = None
        """Where the backend can time each op: builds ``(function, op_seconds)``, the same computation with a clock
        read after each op; ``kiln.profiler`` builds it on the first call it records and runs it while it records."""
        self.timed: tuple[Callable[..., tuple[Any, ...]], list[float]] | None = None
        """The timed build, once built (never without a profiler)."""
        names = assign_names(graph)
        self.input_names = [names[value] for value in graph.inputs]
        self.input_types = [value.type for value in graph.inputs]
        self.output_types = [value.type for value in graph.outputs]
        self._checked: set[tuple[Any, ...]] = set()

    def __call__(self, *arrays: Any) -> tuple[Any, ...]:
        signature = _signature(arrays)
        if signature is None or signature not in self._checked:
            check_inputs(self.graph.name, self.input_names, self.input_types, arrays)
            if signature is not None and len(self._checked) < 64:
                self._checked.add(signature)  # the same dtypes and shapes pass again: skip the checks (a hot loop)
        if RECORDING.recorder is not None:  # kiln.profiler is recording: the call (and each op) becomes an event
            return RECORDING.recorder.executable_call(self, list(map(plain, arrays)))
        return self.function(*map(plain, arrays))  # a parameter's TorchArray as a plain view: no subclass wrapping

    def op_times(self) -> list["OpTime"]:
        """Each op's milliseconds in the last call of a profiling build (``NumpyBackend(profile=True)``)."""
        if self.op_seconds is None:
            raise RuntimeError(f"op_times needs a profiling build of the {self.backend} backend: "
                               f"NumpyBackend(profile=True) or KILN_NUMPY_PROFILE=1")
        return [OpTime(index, op, 1e3 * seconds) for index, (op, seconds) in enumerate(zip(self.graph.ops, self.op_seconds))]


@dataclass(frozen=True)
class OpTime:
    index: int
    """The op's position in the lowered graph."""
    op: Op
    ms: float


def _signature(arrays: Sequence[Any]) -> tuple[Any, ...] | None:
    try:
        return tuple((array.dtype, array.shape) for array in arrays)
    except AttributeError:
        return None


def check_inputs(graph_name: str, names: Sequence[str], types: Sequence[TensorType], arrays: Sequence[Any]) -> dict[str, int]:
    """Check count, dtype and shape of every array; returns the bound symbolic dims."""
    if len(arrays) != len(types):
        raise InputError(f"@{graph_name} takes {len(types)} inputs ({', '.join(names)}), got {len(arrays)}")
    bound: dict[str, int] = {}
    for name, expected, array in zip(names, types, arrays):
        _check_one(graph_name, name, expected, array, bound)
    return bound


def _check_one(graph_name: str, name: str, expected: TensorType, array: Any, bound: dict[str, int]) -> None:
    dtype = getattr(array, "dtype", None)
    shape = tuple(getattr(array, "shape", ()))
    problem = None
    if dtype is None or np.dtype(dtype) != expected.dtype.numpy:
        problem = "dtype"
    elif len(shape) != expected.rank:
        problem = "rank"
    else:
        problem = _bind_dims(expected, shape, bound)
    if problem:
        received = f"{np.dtype(dtype).name if dtype is not None else type(array).__name__} array of shape {shape}"
        raise InputError(
            f"input %{name} of @{graph_name}: expected {expected}, got {received} (wrong {problem}); "
            f"pass an array of that type (cast with .astype({expected.dtype.numpy.name!r}) if only the dtype differs)"
        )


def _bind_dims(expected: TensorType, shape: tuple[int, ...], bound: dict[str, int]) -> str | None:
    for dim, size in zip(expected.shape, shape):
        if isinstance(dim, int) and dim != size:
            return "shape"
        if isinstance(dim, str) and "*" not in dim and bound.setdefault(dim, size) != size:
            return f"shape: {dim} is already {bound[dim]}"
    return None
