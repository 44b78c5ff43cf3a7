"""``kiln.vmap(fn)``: ``fn`` mapped over a batch axis of its arguments, as one batched graph (JAX's ``vmap``).

```python
per_example = kiln.vmap(kiln.grad(loss), in_axes=(None, 0, 0))   # each example's gradient, no loop
per_example(w, xs, ys)                                            # arrays in: traced and compiled once per signature
```

``fn`` is traced once on per-example inputs (each argument without its batch
axis) into a graph of its own; ``kiln.compiler.batching`` then replays that
graph op by op into the graph being built, each op through its batching rule.
So ``vmap`` composes with ``kiln.grad`` both ways and with itself: a ``grad``
inside ``fn`` differentiates the per-example graph before it is batched, and a
``grad`` outside differentiates the batched ops like any others.

``in_axes`` is an int or ``None`` for every argument, or a tuple with one entry
per argument (``None``: not mapped, shared by every example), nested like an
argument that is a tuple or list of arrays. ``out_axes`` (an int) is where the
batch axis goes in every result; a result that no mapped input reaches is
repeated along it.

Randomness: ``fn`` may not draw random numbers (dropout in training mode): vmap
refuses, as JAX's ``vmap(randomness="error")`` does, since whether each example
should get its own draws ("different") or one shared draw ("same") is the
caller's choice that kiln does not guess. Module buffer updates (BatchNorm in
training mode) are refused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import numpy as np

from kiln.compiler.batching import Slot, batch_graph
from kiln.compiler.batching.rules import materialize, moved_axis
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import Dim, normalize_axis
from kiln.frontend.tensor import Tensor, to_value
from kiln.frontend.trace import TraceContext, as_value, located_error
from kiln.runtime.pytree import flatten, unflatten
from kiln.runtime.traced_transform import Compiled, TracedTransform

InAxes = Union[int, None, Sequence[Any]]


@dataclass
class VmapFunction(TracedTransform):
    """``fn`` mapped over axis ``in_axes`` of its arguments, the batch axis placed at ``out_axes`` of its results."""

    fn: Callable[..., Any]
    in_axes: InAxes = 0
    out_axes: int = 0
    backend: str = "numpy"
    compiled: dict[tuple[Any, ...], Compiled] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name_after(self.fn, "vmap")
        if isinstance(self.out_axes, bool) or not isinstance(self.out_axes, int):
            raise located_error(f"kiln.vmap: out_axes must be an int, got {self.out_axes!r}")

    def trace_into(self, *args: Any) -> Any:
        """Emit the batched ``fn`` into the graph being traced; returns Tensors."""
        outer = TraceContext.current()
        builder = outer.builder  # the trace's own: the batched ops join its checkpoint region, if any
        leaves, structure = flatten(args)
        axes = leaf_axes(self.in_axes, args)
        leaves = [_as_tensor(builder, leaf, axis) for leaf, axis in zip(leaves, axes)]
        size = batch_size(leaves, axes)
        inner, result, bindings = self._trace_per_example(outer, builder, structure, leaves, axes)
        bindings.update({inner.parameter_values[id(p)]: (outer.current_value_of(p), False) for p in inner.parameters})
        outputs = batch_graph(inner.graph, builder, bindings, size)
        detach(inner.graph)
        batched = [Tensor(_placed(builder, slot, size, self.out_axes)) for slot in outputs]
        return unflatten(flatten(result)[1], batched)

    def _trace_per_example(self, outer: TraceContext, builder: Builder, structure: Any, leaves: list[Any],
                           axes: list[int | None]) -> tuple[TraceContext, Any, dict[Value, Slot]]:
        """Trace ``fn`` on per-example Tensors into a graph of its own; ``bindings`` maps its inputs to batched values."""
        inner, bindings, examples = inner_context(outer, self.__name__), {}, []
        with inner:
            for leaf, axis in zip(leaves, axes):
                if not isinstance(leaf, Tensor):
                    examples.append(leaf)
                    continue
                shape = leaf.shape if axis is None else leaf.shape[:axis] + leaf.shape[axis + 1 :]
                value = inner.graph.add_input(leaf.type.with_shape(tuple(shape)), leaf.value.name_hint)
                bindings[value] = (leaf.value if axis is None else moved_axis(builder, leaf.value, axis, 0), axis is not None)
                examples.append(Tensor(value))
            result = self.fn(*unflatten(structure, examples))
            inner.graph.outputs = [as_value(item, f"{self.__name__}'s function result") for item in flatten(result)[0]]
        _refuse_effects(inner)
        return inner, result, bindings


def inner_context(outer: TraceContext, name: str) -> TraceContext:
    """A context for tracing into a graph of its own, in ``outer``'s grad mode, naming parameters as ``outer`` does."""
    inner = TraceContext(f"{name}_per_example")
    inner.grad_enabled, inner.parameter_names = outer.grad_enabled, outer.parameter_names
    inner.data_parallel_ranks = outer.data_parallel_ranks
    return inner


def leaf_axes(in_axes: InAxes, args: tuple[Any, ...]) -> list[int | None]:
    """One batch axis (non-negative) or ``None`` per leaf of ``args``, checked against each leaf's rank."""
    leaves, axes = flatten(args)[0], _spread(in_axes, args, "in_axes")
    return [_checked_axis(index, leaf, axis) for index, (leaf, axis) in enumerate(zip(leaves, axes))]


def _spread(axes: Any, tree: Any, where: str) -> list[Any]:
    """``axes`` repeated over every leaf of ``tree``, or matched item by item where it is a tuple or list."""
    if axes is None or (isinstance(axes, int) and not isinstance(axes, bool)):
        return [axes] * len(flatten(tree)[0])
    if not isinstance(axes, (tuple, list)):
        raise located_error(f"kiln.vmap: {where} entries must be ints, None or tuples of them, got {axes!r}")
    if not isinstance(tree, (tuple, list)) or len(axes) != len(tree):
        count = f"{len(tree)} items" if isinstance(tree, (tuple, list)) else "an array"
        raise located_error(f"kiln.vmap: {where}={axes!r} has {len(axes)} entries for {count}; give one entry per "
                            "argument (None for an argument without a batch axis)")
    items = enumerate(zip(axes, tree))
    return [axis for index, (item_axes, item) in items for axis in _spread(item_axes, item, f"{where}[{index}]")]


def _checked_axis(index: int, leaf: Any, axis: int | None) -> int | None:
    if axis is None:
        return None
    rank = leaf.type.rank if isinstance(leaf, Tensor) else np.ndim(leaf)
    if not -rank <= axis < rank:
        raise located_error(f"kiln.vmap: in_axes gives input {index} (of rank {rank}) the batch axis {axis}, which it "
                            "does not have; use an axis in range, or None for an input without a batch axis")
    return axis % rank


def _as_tensor(builder: Builder, leaf: Any, axis: int | None) -> Any:
    """A mapped array becomes a constant Tensor; an unmapped Python value stays as it is, for ``fn`` to see. An eager
    tensor given inside a trace (a closure's tensor mapped under ``torch.func.grad``) becomes the trace's value for
    it (a constant, or a lifted input under ``kiln.compile``), as any op's operand does: its eager value belongs to
    no graph being built."""
    if isinstance(leaf, Tensor):
        value = to_value(TraceContext.current(), leaf, None)
        return leaf if value is leaf.value else Tensor(value)
    return leaf if axis is None else Tensor(builder.constant(np.asarray(leaf)))


def batch_size(leaves: Sequence[Any], axes: Sequence[int | None]) -> Dim:
    sizes = {index: leaf.shape[axis] for index, (leaf, axis) in enumerate(zip(leaves, axes)) if axis is not None}
    if not sizes:
        raise located_error("kiln.vmap needs at least one input with a batch axis; in_axes maps none (all None)")
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"input {index} has {size} along axis {axes[index]}" for index, size in sizes.items())
        raise located_error(f"kiln.vmap got inputs of different batch sizes: {listed}; every mapped input needs the same size")
    return next(iter(sizes.values()))


def _refuse_effects(inner: TraceContext) -> None:
    if inner.seed_input is not None:
        draws = sorted({op.location or op.name for op, _ in inner.seed_input.uses})
        raise located_error(f"kiln.vmap does not batch random ops ({', '.join(draws)}), as JAX's randomness='error': call "
                            "model.eval() to trace dropout out, or draw outside the mapped function and pass the noise in")
    if inner.buffer_updates:
        raise located_error("kiln.vmap does not batch module buffer updates (BatchNorm's running statistics in training "
                            "mode); call model.eval() first")


def _placed(builder: Builder, slot: Slot, size: Dim, out_axes: int) -> Value:
    """A result with its batch axis at ``out_axes`` (repeated along it if no mapped input reaches it)."""
    value, batched = slot
    value = value if batched else materialize(builder, value, size)
    return moved_axis(builder, value, 0, normalize_axis(out_axes, value.type.rank))


def detach(graph: Graph) -> None:
    """Drop the per-example graph's uses of outer values (those ``fn`` closed over), so their use lists stay exact."""
    for op in graph.ops:
        op.drop_operands()


def vmap(fn: Callable[..., Any], in_axes: InAxes = 0, out_axes: int = 0, backend: str = "numpy") -> VmapFunction:
    """``fn`` mapped over axis ``in_axes`` of its inputs (per input: an int, or None for a shared one), results stacked
    along ``out_axes``. Composes with ``kiln.grad``, ``kiln.compile`` and itself."""
    return VmapFunction(fn, in_axes, out_axes, backend)
