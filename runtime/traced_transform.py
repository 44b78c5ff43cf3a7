"""What ``kiln.vmap``, ``kiln.jacrev`` and ``kiln.hessian`` share: called on traced Tensors a transform traces into the
graph being built; called on arrays it traces, compiles and runs, once per signature (as ``kiln.grad`` does).

A subclass defines ``trace_into(*args)``: the transformed function on Tensors (arguments may nest in tuples and
lists), returning a Tensor or nested tuples and lists of them.

In-place writes: a function that updates a tensor it was given (BatchNorm's running statistics on the buffers
passed to ``functional_call``: rebound by ``F.batch_norm``, or recorded by ``TraceContext.update_buffer``) has that
update land on the caller's eager tensor, as torch.func's in-place update does on the tensor passed in. The traced
graph returns the new values beside the results, and they are copied in after the run. A module buffer the function
closes over and updates (``functional_call(model, params)`` on a model in training mode) is written back too, as a
compiled training step writes it: torch.func refuses that ("mutate a captured Tensor"), but kiln's own transforms
and existing kiln code rely on it (``vmap`` refuses it where a mapped input reaches the update, as torch's).

Random ops (dropout in training mode, ``vmap(randomness="different")``'s per-example draws) draw at each call from a
seed drawn from kiln's generator, as torch.func's eager calls draw from torch's.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType
from kiln.frontend.autocast import autocast_signature
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.init import draw_seed
from kiln.frontend.module import ArrayLeaf
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TensorSpec, TraceContext, located_error, trace_context
from kiln.runtime.eager import write_in_place
from kiln.runtime.eager_transform_replay import needs_chain, replayed_transform
from kiln.runtime.eager_transforms import as_eager, on_eager_tensors
from kiln.runtime.pytree import Structure, flatten, unflatten

Compiled = tuple[Callable[..., Any], list[Any], Structure]
"""The executable (``seeded`` where the function draws random numbers), the parameters it reads after the
arguments, and the structure of its results: the pair ``(the transform's result, its writes)`` (``Writes``)."""

Writes = dict[int, Any]
"""New values of what the traced function wrote in place: by argument leaf index, or, past the last leaf, by the
index of a module buffer among the parameters the trace read (``len(leaves) + k``)."""


_SUPPRESSED = threading.local()


@contextmanager
def writes_suppressed() -> Iterator[None]:
    """Transforms run inside drop their functions' in-place writes: a second evaluation of a function whose writes
    already landed (``vjp``'s pullback replays the forward; ``linearize``'s ``jvp_fn``) must not update them again.
    Run on eager tensors, nothing is written back (``write_back``); traced (the pullback mapped by ``vmap``, as
    torch's ``jacrev`` maps it, or called inside ``kiln.compile``), the buffer updates recorded meanwhile in the trace
    being built are dropped, so the enclosing transform does not write them either."""
    updates = TraceContext.current().buffer_updates if TraceContext.active() else {}
    before = dict(updates)
    _SUPPRESSED.depth = getattr(_SUPPRESSED, "depth", 0) + 1
    try:
        yield
    finally:
        _SUPPRESSED.depth -= 1
        updates.clear()
        updates.update(before)


class TracedTransform:
    """A function transform over ``trace_into``: traced into the graph being built, or compiled and run per signature."""

    backend: str
    compiled: dict[tuple[Any, ...], Compiled]
    __name__: str

    def trace_into(self, *args: Any) -> Any:
        raise NotImplementedError

    def name_after(self, fn: Any, prefix: str) -> None:
        """``__name__`` ``prefix_<fn's name>`` (the compiled graph's name) and ``__wrapped__`` ``fn`` (whose signature
        gives input names on export)."""
        self.__wrapped__ = fn
        self.__name__ = f"{prefix}_{getattr(fn, '__name__', 'fn')}"

    def __call__(self, *args: Any) -> Any:
        leaves = flatten(args)[0]
        if on_eager_tensors(leaves):
            return self._on_eager(args, leaves)
        if any(isinstance(leaf, Tensor) for leaf in leaves):
            return self.trace_into(*args)
        return self._run(args)[0]  # arrays in: nothing to write in place (kiln.vmap on arrays is functional, as JAX's)

    def _on_eager(self, args: tuple[Any, ...], leaves: list[Any]) -> Any:
        """The result on eager tensors, compiled and run (or, where a backward must reach the arguments through the
        results, replayed op by op), the function's in-place writes copied into the tensors they target."""
        entry = self._entry(args)
        if needs_chain(leaves) or needs_chain(entry[1]):
            read: list[list[Any]] = []
            result, writes = replayed_transform(self._with_writes(read), self.__name__, args)
            write_back(writes, leaves, read[0])
            return result
        result, writes = self._run(args, entry)
        write_back(writes, leaves, entry[1])
        return as_eager(result)

    def _with_writes(self, read: list[list[Any]]) -> Callable[..., tuple[Any, Writes]]:
        """``trace_into`` returning ``(result, writes)``; ``read`` gets the parameters the trace read (their order
        keys the writes to module buffers)."""
        def traced(*args: Any) -> tuple[Any, Writes]:
            leaves = flatten(args)[0]
            before = [held(leaf) for leaf in leaves]
            result = self.trace_into(*args)
            context = TraceContext.current()
            read.append(context.parameters)
            writes: Writes = {index: Tensor(value) for index, value in written(context, leaves, before).items()}
            return result, {**writes, **self._captured_writes(context, leaves)}

        return traced

    def _captured_writes(self, context: TraceContext, leaves: Sequence[Any]) -> Writes:
        """The new values of module buffers the function closes over and updated, keyed as ``Writes``. A plain tensor
        it closes over (its value a constant of the graph) cannot be written: refused, as torch.func refuses."""
        own, writes = {id(leaf) for leaf in leaves}, {}
        for key, (target, value) in context.buffer_updates.items():
            if key in own:
                continue
            if not isinstance(target, ArrayLeaf):
                raise located_error(f"{self.__name__}: During a grad (vjp, jvp, grad, etc) transform, the function "
                                    "provided attempted to call in-place operation (a running statistic's update) that "
                                    "would mutate a captured Tensor. This is not supported; please rewrite the function "
                                    "being transformed to explicitly accept the mutated Tensor(s) as inputs")
            context.value_of(target)  # read, so it has its place among the parameters
            writes[len(leaves) + [id(p) for p in context.parameters].index(key)] = Tensor(value)
        return writes

    def _run(self, args: tuple[Any, ...], entry: Compiled | None = None) -> tuple[Any, Writes]:
        executable, parameters, results = entry or self._entry(args)
        outputs = executable(*[np.asarray(leaf) for leaf in flatten(args)[0]], *[p.data for p in parameters])
        return unflatten(results, [np.asarray(output) for output in outputs])

    def _entry(self, args: tuple[Any, ...]) -> Compiled:
        """The compiled function for the arguments' signature, compiled on first sight."""
        leaves, structure = flatten(args)
        arrays = [np.asarray(leaf) for leaf in leaves]
        key = (structure, tuple((a.shape, a.dtype.str) for a in arrays), autocast_signature())  # traced inside an autocast region or not
        if key not in self.compiled:
            self.compiled[key] = self._compile(structure, arrays)
        return self.compiled[key]

    def _compile(self, structure: Structure, arrays: Sequence[np.ndarray]) -> Compiled:
        results: list[Structure] = []
        with_writes = self._with_writes([])

        def traced(*tensors: Tensor) -> Any:
            result = with_writes(*unflatten(structure, tensors))
            results.append(flatten(result)[1])
            return result

        specs = [TensorSpec(a.shape, DType.of(a.dtype)) for a in arrays]
        context = trace_context(traced, *specs, name=self.__name__, what=f"{self.__name__}'s result")
        if context.seed_input is None:
            return get_backend(self.backend).compile(context.graph), list(context.parameters), results[0]
        context.graph.inputs.remove(context.seed_input)  # the seed last, after the parameters: fed at each call
        context.graph.inputs.append(context.seed_input)
        return seeded(get_backend(self.backend).compile(context.graph)), list(context.parameters), results[0]


def seeded(executable: Callable[..., Any]) -> Callable[..., Any]:
    """``executable`` given a fresh seed from kiln's generator as its last input at each call: the function's random
    ops (dropout in training mode, ``vmap(randomness="different")``) draw anew each call, as torch.func's eager draws,
    repeated by ``kiln.manual_seed``."""
    return lambda *inputs: executable(*inputs, draw_seed())


def held(tensor: Any) -> Value | None:
    """The value a tensor holds now (an in-place op rebinds it to a new one); None for anything else."""
    return tensor.__dict__.get("_value") if isinstance(tensor, Tensor) else None


def written(context: TraceContext, tensors: Sequence[Any], before: Sequence[Value | None]) -> dict[int, Value]:
    """The new value of each of ``tensors`` the traced function wrote in place, by position: rebound by an in-place
    op (``F.batch_norm``'s running statistics on plain tensors, ``x.add_(1)``; ``before`` holds what they held), or
    given a buffer update (BatchNorm's ``num_batches_tracked`` on a tensor given to ``functional_call``)."""
    writes = {}
    for index, (tensor, old) in enumerate(zip(tensors, before)):
        update = context.buffer_updates.get(id(tensor)) if isinstance(tensor, Tensor) else None
        now = held(tensor)
        if update is not None:
            writes[index] = update[1]
        elif now is not None and now is not old:
            writes[index] = now
    return writes


def write_back(writes: Writes, leaves: Sequence[Any], parameters: Sequence[Any]) -> None:
    """Copy each written value into its target: an eager argument tensor (a NumPy array argument is left alone), or a
    module buffer the function closed over; nothing inside ``writes_suppressed``."""
    if getattr(_SUPPRESSED, "depth", 0):
        return
    with no_grad():
        for key, new in writes.items():
            target = leaves[key] if key < len(leaves) else parameters[key - len(leaves)]
            if isinstance(target, Tensor):
                write_in_place(target, new.detach().numpy() if isinstance(new, Tensor) else np.asarray(new))
