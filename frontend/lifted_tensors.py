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

A tensor the function writes in place (``buffer.add_(x)``, ``obs[step] = o``,
``alpha.copy_(log_alpha.exp())``) holds its traced new value while the trace
runs, so later reads in the trace see it; when the trace ends it gets its own
values back (``restore_written``) and the new value is a graph output, written
into it after each call (``LiftedTensors.write_back``), as ``torch.compile``
writes a mutated input back.

A compiled forward split for ``loss.backward()`` (``lifts=False``) keeps the
tensors it reads as guarded constants (its graph takes no more inputs), except
one that requires grad (a closure's ``w = torch.randn(3).requires_grad_()``, a
result on its chain): lifted, it is a differentiated input, and the call's
recorded op links to its chain, so ``backward()`` reaches it, as
``torch.compile``'s.
"""

from __future__ import annotations

import functools
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
        self.requiring_grad: set[int] = set()
        """``id`` of each lifted tensor that required grad when traced: a leaf of the trace's gradients."""
        self.written: dict[int, tuple[Any, Value]] = {}
        """Tensors the trace wrote in place, with the eager value each held before (``record_write``)."""
        self.written_tensors: list[Any] = []
        """The written tensors, in the order their new values follow the graph's other outputs (``restore_written``)."""
        self.followed: list[tuple[Any, Callable[[], Any]]] = []
        """``(tensor, source)``: a tensor whose slot the trace set to another (``follow``)."""

    def lifts_tensor(self, tensor: Any) -> bool:
        """Whether reading the eager ``tensor`` makes it a graph input (else a constant)."""
        return self.lifts or bool(tensor.requires_grad)

    def lifted_input(self, context: Any, tensor: Any, array: np.ndarray) -> Value:
        """The graph input of ``context``'s trace standing for the eager ``tensor`` (whose values are ``array`` now),
        created on first use; one that requires grad is a gradient leaf of the trace (``grad_leaves``)."""
        entry = self.lifted.get(id(tensor))
        if entry is None:
            value = context.graph.add_input(TensorType.of_array(array), f"captured{len(self.lifted)}")
            entry = self.lifted[id(tensor)] = (tensor, value)
            if context.specializing is not None:
                context.specializing.add_source(value, array)
            if value.type.dtype.is_float and tensor.requires_grad:
                self.requiring_grad.add(id(tensor))
                context.grad_leaves.add(value)
        return entry[1]

    def follow(self, tensor: Any, source: Callable[[], Any]) -> None:
        """If the trace reads (lifts) ``tensor``, feed that input from ``source()`` at each call: the trace set the slot
        holding ``tensor`` to a tensor it computed (an optimizer's ``state[p]["momentum_buffer"] = grad``), which the
        next call reads there (``LiftedTensors.follow``)."""
        self.followed.append((tensor, source))

    def guard(self, tensor: Any, array: np.ndarray) -> None:
        """The trace used ``tensor``'s values ``array`` as constants: later calls need the same values."""
        if id(tensor) not in self.guarded:
            self.guarded[id(tensor)] = (tensor, np.array(array, copy=True))

    def record_write(self, tensor: Any) -> None:
        """The trace is about to rebind the eager ``tensor`` to a traced value (an in-place write): remember its own."""
        if id(tensor) not in self.written:
            self.written[id(tensor)] = (tensor, tensor.__dict__["_value"])

    def restore_written(self) -> list[Value]:
        """At the trace's end (or failure): each written tensor's traced new value, its own value given back."""
        new_values = []
        for tensor, own in self.written.values():
            new_values.append(tensor.__dict__["_value"])
            tensor._value = own
        self.written_tensors = [tensor for tensor, _ in self.written.values()]
        self.written.clear()
        return new_values

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
        self.sources: dict[int, Callable[[], Any]] = {}
        """Lifted tensors fed from where they are held at each call (``follow``): a module attribute the function
        rebinds, a global rebound between calls; by index."""
        self.requiring_grad = [id(tensor) in lifting.requiring_grad for tensor in self.tensors] if lifting is not None else []
        """Which lifted tensors required grad when traced: a call's outputs need a chain back to them."""
        self.written = lifting.written_tensors if lifting is not None else []
        """Tensors the function writes in place: their new values are the graph's last outputs (``write_back``)."""
        self.only_grad = lifting is not None and not lifting.lifts
        """Whether only tensors requiring grad were lifted (a training forward): a call finding one that no longer
        does traces again (it would be a constant)."""
        for tensor, source in lifting.followed if lifting is not None else []:
            if any(lifted is tensor for lifted in self.tensors):
                self.follow(tensor, source)

    def follow_attribute(self, tensor: Any, module: Any, name: str) -> None:
        """Feed the lifted ``tensor`` from ``module.name`` at each call: the function sets that attribute to a new
        tensor (``self.h = f(self.h)``), so the next call reads that one."""
        self.follow(tensor, functools.partial(_attribute_now, module, name))

    def follow(self, tensor: Any, source: Callable[[], Any]) -> None:
        """Feed the lifted ``tensor`` from ``source()`` at each call (what holds it now)."""
        self.sources[next(k for k, t in enumerate(self.tensors) if t is tensor)] = source

    def current(self) -> list[Any]:
        """The tensors to feed now: each lifted one, or the one its source holds now (``follow``)."""
        tensors = list(self.tensors)
        for index, source in self.sources.items():
            tensors[index] = source()
        return tensors

    def arrays(self) -> list[np.ndarray]:
        """The lifted tensors' arrays now, to feed after the parameters."""
        from kiln.frontend.eager_values import eager_array  # lazily: the tensor values build on the trace

        return [_number_array(tensor) if type(tensor) is int else eager_array(tensor) for tensor in self.current()]

    def write_back(self, new_values: list[np.ndarray]) -> None:
        """Write each written tensor's new values into it, as an eager ``copy_`` (its views follow or go stale)."""
        from kiln.frontend.eager_values import eager_leaf  # lazily: the tensor values build on the trace
        from kiln.frontend.grad_mode import no_grad

        with no_grad():
            for tensor, values in zip(self.written, new_values):
                tensor.copy_(eager_leaf(np.array(values)))

    def hold(self) -> bool:
        """Whether each lifted tensor keeps its traced shape and dtype, and each guarded one its values."""
        from kiln.frontend.eager_values import ARRAYS

        for tensor, expected in zip(self.current(), self.types):
            array = _array(tensor, ARRAYS)
            if array is None or array.shape != expected.shape or array.dtype != expected.dtype.numpy:
                return False
            if self.only_grad and type(tensor) is not int and not tensor.requires_grad:  # int: a counter's
                return False
        for tensor, values in self.guarded:
            array = _array(tensor, ARRAYS)
            if array is None or array.shape != values.shape or not np.array_equal(array, values, equal_nan=True):
                return False
        return True


def _number_array(number: int) -> np.ndarray:
    """What feeds a counter's graph input (an int attribute read as a ``DynamicInt``: ``runtime/dynamic_attributes.py``)."""
    return np.asarray(number, dtype=np.int64)


def _array(tensor: Any, arrays: Any) -> np.ndarray | None:
    """The eager tensor's array now, without recording a read (None: it has none, or it went stale); an int attribute
    followed (a counter's), its number's."""
    if type(tensor) is int:
        return _number_array(tensor)
    if not isinstance(getattr(tensor, "__dict__", None), dict):  # an attribute followed now holds no tensor
        return None
    if "_stale" in tensor.__dict__:
        return None
    value = tensor.__dict__.get("_value")
    return None if value is None else arrays.get(value)


def _attribute_now(owner: Any, name: str) -> Any:
    return owner.__dict__.get(name)


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
