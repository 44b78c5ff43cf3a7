"""Eager tensors a ``kiln.compile``'d function reads, lifted to graph inputs and guarded, as ``torch.compile`` does.

A compiled function may read tensors it was not given: a closure's rollout
buffer (CleanRL's ``obs[step] = next_obs``), a global mask, a plain tensor
attribute of a module. Traced as constants they would keep their values from
the trace, stale once the program writes them in place. ``kiln.compile``
installs an ``EagerTensorLifting`` on its trace instead (``TraceContext.lifting``):

- a tensor an op reads becomes a graph input, fed the tensor's array at each
  call (``lifted_input``); a call finding its shape or dtype changed traces again;
- values the trace's Python reads from one (a boolean mask's positions, a
  ``bincount`` size: ``eager_values.eager_array`` in a trace) stay constants,
  guarded: a call finding them changed traces again (``LiftedTensors.hold``).

A tensor that requires grad stays a constant read once (guarded too): its
gradient would need the compiled backward to reach it. So does every one a
compiled forward split for ``loss.backward()`` reads (``lifts=False``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import TensorType


class EagerTensorLifting:
    """One trace's lifted eager tensors (graph inputs, in order) and guarded ones (values copied when read)."""

    def __init__(self, lifts: bool = True) -> None:
        self.lifts = lifts
        """False: every eager tensor read stays a constant, guarded (a compiled forward split for training, whose
        graph takes no more inputs)."""
        self.lifted: dict[int, tuple[Any, Value]] = {}
        self.guarded: dict[int, tuple[Any, np.ndarray]] = {}

    def lifted_input(self, graph: Graph, tensor: Any, array: np.ndarray) -> Value:
        """The graph input standing for the eager ``tensor`` (whose values are ``array`` now), created on first use."""
        entry = self.lifted.get(id(tensor))
        if entry is None:
            value = graph.add_input(TensorType.of_array(array), f"captured{len(self.lifted)}")
            entry = self.lifted[id(tensor)] = (tensor, value)
        return entry[1]

    def guard(self, tensor: Any, array: np.ndarray) -> None:
        """The trace used ``tensor``'s values ``array`` as constants: later calls need the same values."""
        if id(tensor) not in self.guarded:
            self.guarded[id(tensor)] = (tensor, np.array(array, copy=True))

    def tensors(self) -> list[Any]:
        return [tensor for tensor, _ in self.lifted.values()]

    def inputs(self) -> list[Value]:
        return [value for _, value in self.lifted.values()]


class LiftedTensors:
    """What a compiled variant keeps of its trace's lifting: the tensors to feed, and the guards to check."""

    def __init__(self, lifting: EagerTensorLifting | None):
        self.tensors = lifting.tensors() if lifting is not None else []
        self.types = [value.type for value in lifting.inputs()] if lifting is not None else []
        self.guarded = list(lifting.guarded.values()) if lifting is not None else []

    def arrays(self) -> list[np.ndarray]:
        """The lifted tensors' arrays now, to feed after the parameters."""
        from kiln.frontend.eager_values import eager_array  # lazily: the tensor values build on the trace

        return [eager_array(tensor) for tensor in self.tensors]

    def hold(self) -> bool:
        """Whether each lifted tensor keeps its traced shape and dtype, and each guarded one its values."""
        from kiln.frontend.eager_values import ARRAYS

        for tensor, expected in zip(self.tensors, self.types):
            array = _array(tensor, ARRAYS)
            if array is None or array.shape != expected.shape or array.dtype != expected.dtype.numpy:
                return False
        for tensor, values in self.guarded:
            array = _array(tensor, ARRAYS)
            if array is None or array.shape != values.shape or not np.array_equal(array, values, equal_nan=True):
                return False
        return True


def _array(tensor: Any, arrays: Any) -> np.ndarray | None:
    """The eager tensor's array now, without recording a read (None: it has none, or it went stale)."""
    if "_stale" in tensor.__dict__:
        return None
    value = tensor.__dict__.get("_value")
    return None if value is None else arrays.get(value)


def lifting_eager_tensors(fn: Callable[..., Any], lifts: bool = True) -> Callable[..., Any]:
    """``fn`` traced with the eager tensors it reads lifted to inputs (``lifts``) or kept as guarded constants; the
    caller names it as ``fn`` (``compile_arguments.named_like``)."""
    def traced(*inputs: Any) -> Any:
        from kiln.frontend.trace import TraceContext  # lazily: the trace builds on the tensors

        TraceContext.current().lifting = EagerTensorLifting(lifts)
        return fn(*inputs)

    return traced


def lifted_after_parameters(graph: Graph, lifting: EagerTensorLifting | None, parameters: list[Value], arguments: int) -> None:
    """Lay the lifted inputs right after the parameters' (before a training step's inputs and the seed)."""
    if lifting is None or not lifting.lifted:
        return
    lifted = lifting.inputs()
    skip = set(map(id, lifted))
    rest = [value for value in graph.inputs if id(value) not in skip]
    placed = set(map(id, parameters))
    last = max((index for index, value in enumerate(rest) if id(value) in placed), default=arguments - 1)
    graph.inputs = rest[: last + 1] + lifted + rest[last + 1 :]


__all__ = ["EagerTensorLifting", "LiftedTensors", "lifted_after_parameters", "lifting_eager_tensors"]
