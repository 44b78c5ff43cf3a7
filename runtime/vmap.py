"""``kiln.vmap(fn)``: ``fn`` mapped over a batch axis of its arguments, as one batched graph (JAX's ``vmap``).

```python
per_example = kiln.vmap(kiln.grad(loss), in_axes=(None, 0, 0))   # each example's gradient, no loop
per_example(w, xs, ys)                                            # arrays in: traced and compiled once per signature
kiln.func.vmap(f, out_dims=(0, 1))(x, scale=3.0)                  # torch's spelling: keywords pass through unmapped
```

``fn`` is traced once on per-example inputs (each argument without its batch
axis) into a graph of its own; ``kiln.compiler.batching`` then replays that
graph op by op into the graph being built, each op through its batching rule.
So ``vmap`` composes with ``kiln.grad`` both ways and with itself: a ``grad``
inside ``fn`` differentiates the per-example graph before it is batched, and a
``grad`` outside differentiates the batched ops like any others.

``in_axes`` is an int or ``None`` for every argument, or a tuple with one entry
per argument (``None``: not mapped, shared by every example), nested like an
argument that is a tuple or list of arrays. ``out_axes`` (an int for
``kiln.vmap``; for ``torch.func.vmap``'s ``out_dims`` also ``None`` or a tuple
nested like the results) is where the batch axis goes in each result; a result
that no mapped input reaches is repeated along it (returned as it is where its
entry is ``None``). Keyword arguments are passed to ``fn`` unmapped, as torch's.

Randomness: with ``randomness="different"`` (torch.func's) each example draws
its own numbers (dropout in training mode: a mask per example), from the
enclosing graph's seed; with "error" (the default) vmap refuses random ops, as
torch's and JAX's do; "same" (one draw shared by every example) is refused too,
not implemented yet.

In-place writes (BatchNorm's running statistics in training mode) batch as
torch's: a write onto a mapped argument (``stack_module_state``'s buffers given
to ``functional_call``) updates each example's slice; a write that a mapped
input reaches onto an unmapped tensor or a module's own buffer is refused with
torch's error; an unbatched write passes to the enclosing trace.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence, Union

import numpy as np

from kiln.compiler.batching import Slot, batch_graph
from kiln.compiler.batching.rules import materialize, moved_axis
from kiln.compiler.errors import TraceError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import Dim, normalize_axis
from kiln.frontend.op_dispatch import to_value
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext, as_value, located_error
from kiln.runtime.pytree import Structure, flatten, flatten_keeping, unflatten
from kiln.runtime.traced_transform import Compiled, TracedTransform, written

InAxes = Union[int, None, Sequence[Any]]
OutAxes = Union[int, None, Sequence[Any], dict[Any, Any]]


@dataclass(frozen=True)
class Spelling:
    """How ``vmap``'s errors name it and its axes: kiln's own (JAX's ``in_axes``/``out_axes``) or ``torch.func``'s
    (``in_dims``/``out_dims``), so each user reads the words of the API they called."""

    who: str = "kiln.vmap"
    in_axes: str = "in_axes"
    out_axes: str = "out_axes"


KILN_SPELLING = Spelling()
TORCH_SPELLING = Spelling("vmap", "in_dims", "out_dims")


class VmapError(TraceError, ValueError):
    """Axes that do not fit ``vmap``'s inputs or results: a ``ValueError``, as torch's, and a located ``TraceError``."""


@dataclass
class VmapFunction(TracedTransform):
    """``fn`` mapped over axis ``in_axes`` of its arguments, the batch axis placed at ``out_axes`` of its results."""

    fn: Callable[..., Any]
    in_axes: InAxes = 0
    out_axes: OutAxes = 0
    backend: str = "numpy"
    compiled: dict[tuple[Any, ...], Compiled] = field(default_factory=dict)
    spelling: Spelling = KILN_SPELLING
    randomness: str = "error"
    keyword_variants: dict[Any, "VmapFunction"] = field(default_factory=dict, repr=False)
    """``self`` for calls with keyword arguments, by positional count and the keywords' structure (``_taking``)."""

    def __post_init__(self) -> None:
        self.name_after(self.fn, "vmap")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` mapped; the keywords' tensors are passed as one more, unmapped, argument."""
        if not kwargs:
            return super().__call__(*args)
        leaf_axes(self.in_axes, args, self.spelling)  # the positional arguments alone must fit in_axes
        tensors, structure = flatten_keeping(kwargs, lambda leaf: isinstance(leaf, (Tensor, np.ndarray)))
        return self._taking(len(args), structure)(*args, tensors)

    def _taking(self, count: int, keywords: Structure) -> "VmapFunction":
        """``self`` over a function of ``count`` positional arguments and the keywords' tensors (their Python values
        kept in ``keywords``), cached by both where they are hashable."""
        key = (count, keywords)
        try:
            variant = self.keyword_variants.get(key)
        except TypeError:  # an unhashable keyword value: a variant (and a compile) for this call alone
            variant, key = None, None
        if variant is None:
            axes = tuple(self.in_axes) if isinstance(self.in_axes, (tuple, list)) else (self.in_axes,) * count
            variant = replace(self, fn=_keywords_last(self.fn, keywords), in_axes=axes + (None,), compiled={},
                              keyword_variants={})
            if key is not None:
                self.keyword_variants[key] = variant
        return variant

    def trace_into(self, *args: Any) -> Any:
        """Emit the batched ``fn`` into the graph being traced; returns Tensors."""
        check_out_axes(self.out_axes, self.spelling)
        outer = TraceContext.current()
        builder = outer.builder  # the trace's own: the batched ops join its checkpoint region, if any
        given, structure = flatten(args)
        axes = leaf_axes(self.in_axes, args, self.spelling)
        leaves = [_as_tensor(builder, leaf, axis) for leaf, axis in zip(given, axes)]
        size = batch_size(leaves, axes, self.spelling)
        inner, result, bindings, writes = self._trace_per_example(outer, builder, structure, leaves, axes)
        bindings.update({inner.parameter_values[id(p)]: (outer.current_value_of(p), False) for p in inner.parameters})
        outputs = batch_graph(inner.graph, builder, bindings, size)
        detach(inner.graph)
        count = len(outputs) - len(writes)
        self._write(outer, builder, writes, outputs[count:], given, axes, size)
        out_axes = self._out_axes(result)
        batched = [Tensor(self._placed(builder, slot, size, axis)) for slot, axis in zip(outputs[:count], out_axes)]
        return unflatten(flatten(result)[1], batched)

    def _trace_per_example(self, outer: TraceContext, builder: Builder, structure: Any, leaves: list[Any],
                           axes: list[int | None]) -> tuple[TraceContext, Any, dict[Value, Slot], list[tuple[int | None, Any]]]:
        """Trace ``fn`` on per-example Tensors into a graph of its own; ``bindings`` maps its inputs to batched values.
        Its outputs are the results' values, then those ``fn`` wrote in place: ``writes`` holds each write's target
        (the index of the argument leaf, or None and the captured tensor)."""
        inner, bindings, examples = inner_context(outer, self.__name__), {}, []
        before: list[Value | None] = []
        with inner:
            for leaf, axis in zip(leaves, axes):
                if not isinstance(leaf, Tensor):
                    examples.append(leaf)
                    continue
                shape = leaf.shape if axis is None else leaf.shape[:axis] + leaf.shape[axis + 1 :]
                value = inner.graph.add_input(leaf.type.with_shape(tuple(shape)), leaf.value.name_hint)
                bindings[value] = (leaf.value if axis is None else moved_axis(builder, leaf.value, axis, 0), axis is not None)
                examples.append(Tensor(value))
                before.append(value)
            result = self.fn(*unflatten(structure, examples))
            inner.graph.outputs = [as_value(item, f"{self.__name__}'s function result") for item in flatten(result)[0]]
        self._bind_seed(outer, inner, bindings)
        own = written(inner, [e for e in examples if isinstance(e, Tensor)], before)
        indices = [index for index, example in enumerate(examples) if isinstance(example, Tensor)]
        mine = {id(example) for example in examples}
        captured = [(target, value) for key, (target, value) in inner.buffer_updates.items() if key not in mine]
        writes = [(indices[k], None) for k in own] + [(None, target) for target, _ in captured]
        inner.graph.outputs += list(own.values()) + [value for _, value in captured]
        return inner, result, bindings, writes

    def _bind_seed(self, outer: TraceContext, inner: TraceContext, bindings: dict[Value, Slot]) -> None:
        """With ``randomness="different"``, ``fn``'s draws become draws of the enclosing trace: its seed is the outer
        one and its streams are renumbered past the outer's, so every example (a batched draw) and every other draw
        of the enclosing graph gets numbers of its own. Other modes refuse random ops."""
        if inner.seed_input is None:
            return
        if self.randomness != "different":
            self._refuse_random(inner)
        seed, offset = outer.random_seed()
        outer.random_streams += inner.random_streams - 1
        for op, _ in inner.seed_input.uses:
            op.attrs["stream"] += offset
        bindings[inner.seed_input] = (seed, False)

    def _refuse_random(self, inner: TraceContext) -> None:
        draws = sorted({op.location or op.name for op, _ in inner.seed_input.uses})
        mode = ("called random operation while in randomness error mode, as JAX's" if self.randomness == "error" else
                "kiln does not draw one shared sample for every example inside vmap yet")
        raise located_error(f"{self.spelling.who} does not batch random ops ({', '.join(draws)}), randomness="
                            f"{self.randomness!r}: {mode}. Call model.eval() to trace dropout out, draw outside the "
                            "mapped function and pass the noise in, or use torch.func.vmap's randomness='different'")

    def _write(self, outer: TraceContext, builder: Builder, writes: list[tuple[int | None, Any]], slots: list[Slot],
               given: list[Any], axes: list[int | None], size: Dim) -> None:
        """Each in-place write of the per-example function, batched, recorded in the enclosing trace: onto a mapped
        argument along its batch axis; onto an unmapped tensor only where no mapped input reaches it."""
        for (index, target), (value, batched) in zip(writes, slots):
            axis = None if index is None else axes[index]
            if axis is None and batched:
                raise located_error(f"{self.spelling.who}: Batch norm got a batched tensor as input while the "
                                    "running_mean or running_var, which will be updated in place, were not batched. If "
                                    "you are using a module and do not need eval mode, please set `track_running_stats` "
                                    "to be False (kiln.func.replace_all_batch_norm_modules_), or call model.eval(); to "
                                    "keep statistics per example, map them too (stack_module_state's buffers)")
            if axis is not None:
                value = moved_axis(builder, value if batched else materialize(builder, value, size), 0, axis)
            target = target if index is None else given[index]
            if isinstance(target, Tensor):  # an array given to kiln.vmap is not written: arrays are values
                outer.update_buffer(target, value)

    def _out_axes(self, result: Any) -> list[int | None]:
        """One batch axis (or None) per result leaf: ``out_axes`` spread over the results as torch's pytree prefix
        (a one-entry tuple also stands for a lone result)."""
        axes = self.out_axes
        if isinstance(axes, (tuple, list)) and len(axes) == 1 and not isinstance(result, (tuple, list)):
            axes = axes[0]
        return _spread(axes, result, self.spelling.out_axes, self.spelling, "result")

    def _placed(self, builder: Builder, slot: Slot, size: Dim, out_axis: int | None) -> Value:
        """A result with its batch axis at ``out_axis`` (repeated along it if no mapped input reaches it); with None,
        the result as it is, which no mapped input may reach."""
        value, batched = slot
        if out_axis is None:
            if batched:
                name = getattr(self.fn, "__name__", "fn")
                raise located_error(f"{self.spelling.who}: `{name}` can not return a BatchedTensor when out_dim is "
                                    f"None: a mapped input reaches this result; give it an int {self.spelling.out_axes} "
                                    "entry", kind=VmapError)
            return value
        value = value if batched else materialize(builder, value, size)
        return moved_axis(builder, value, 0, normalize_axis(out_axis, value.type.rank))


def _keywords_last(fn: Callable[..., Any], keywords: Structure) -> Callable[..., Any]:
    """``fn`` taking its keyword arguments' tensors as one last positional argument (their Python values in
    ``keywords``)."""
    @functools.wraps(fn)
    def with_keywords(*args: Any) -> Any:
        return fn(*args[:-1], **unflatten(keywords, args[-1]))

    return with_keywords


def inner_context(outer: TraceContext, name: str) -> TraceContext:
    """A context for tracing into a graph of its own, in ``outer``'s grad mode, naming parameters as ``outer`` does."""
    inner = TraceContext(f"{name}_per_example")
    inner.grad_enabled, inner.parameter_names = outer.grad_enabled, outer.parameter_names
    inner.data_parallel_ranks = outer.data_parallel_ranks
    return inner


def leaf_axes(in_axes: InAxes, args: tuple[Any, ...], spelling: Spelling = KILN_SPELLING) -> list[int | None]:
    """One batch axis (non-negative) or ``None`` per leaf of ``args``, checked against each leaf's rank."""
    leaves, axes = flatten(args)[0], _spread(in_axes, args, spelling.in_axes, spelling, "argument")
    return [_checked_axis(index, leaf, axis, spelling) for index, (leaf, axis) in enumerate(zip(leaves, axes))]


def _spread(axes: Any, tree: Any, where: str, spelling: Spelling, item: str) -> list[Any]:
    """``axes`` repeated over every leaf of ``tree``, or matched item by item where it is a tuple, list or dict."""
    if axes is None or isinstance(axes, int):  # a bool too: torch's out_dims=True is 1
        return [axes] * len(flatten(tree)[0])
    if isinstance(axes, dict) and isinstance(tree, dict) and axes.keys() == tree.keys():
        return [axis for key in tree for axis in _spread(axes[key], tree[key], f"{where}[{key!r}]", spelling, item)]
    if not isinstance(axes, (tuple, list, dict)):
        raise located_error(f"{spelling.who}: {where} entries must be ints, None or tuples of them, got {axes!r}",
                            kind=VmapError)
    if not isinstance(tree, (tuple, list)) or len(axes) != len(tree):
        count = f"{len(tree)} items" if isinstance(tree, (tuple, list, dict)) else "an array"
        raise located_error(f"{spelling.who}: {where}={axes!r} has {len(axes)} entries for {count} (it is not compatible "
                            f"with the structure of the {item}s); give one entry per {item} (None for one without a "
                            "batch axis)", kind=VmapError)
    items = enumerate(zip(axes, tree))
    return [axis for index, (item_axes, part) in items for axis in _spread(item_axes, part, f"{where}[{index}]", spelling, item)]


def check_out_axes(out_axes: Any, spelling: Spelling) -> None:
    """torch's check that ``out_dims`` is an int, None or a (nested) tuple, list or dict of them."""
    if out_axes is None or isinstance(out_axes, int):
        return
    if isinstance(out_axes, (tuple, list, dict)):
        for item in out_axes.values() if isinstance(out_axes, dict) else out_axes:
            check_out_axes(item, spelling)
        return
    raise located_error(f"{spelling.who}: `{spelling.out_axes}` must be an int, None or a python collection of ints "
                        f"representing where in the outputs the vmapped dimension should appear, got {out_axes!r}",
                        kind=VmapError)


def _checked_axis(index: int, leaf: Any, axis: int | None, spelling: Spelling) -> int | None:
    if axis is None:
        return None
    axis = int(axis)
    rank = leaf.type.rank if isinstance(leaf, Tensor) else np.ndim(leaf)
    if not -rank <= axis < rank:
        raise located_error(f"{spelling.who}: {spelling.in_axes} gives input {index} (of rank {rank}) the batch axis "
                            f"{axis}, which it does not have (expected {-rank} <= in_dim < {rank}); use an axis in "
                            "range, or None for an input without a batch axis", kind=VmapError)
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


def batch_size(leaves: Sequence[Any], axes: Sequence[int | None], spelling: Spelling = KILN_SPELLING) -> Dim:
    sizes = {index: leaf.shape[axis] for index, (leaf, axis) in enumerate(zip(leaves, axes)) if axis is not None}
    if not sizes:
        raise located_error(f"{spelling.who} needs at least one input with a batch axis; {spelling.in_axes} maps none "
                            "(all None): Expected at least one Tensor to vmap over", kind=VmapError)
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"input {index} has {size} along axis {axes[index]}" for index, size in sizes.items())
        raise located_error(f"{spelling.who} got inputs of different batch sizes: {listed}; every mapped input needs "
                            "the same size (Expected all tensors to have the same size in the mapped dimension)",
                            kind=VmapError)
    return next(iter(sizes.values()))


def detach(graph: Graph) -> None:
    """Drop the per-example graph's uses of outer values (those ``fn`` closed over), so their use lists stay exact."""
    for op in graph.ops:
        op.drop_operands()


def vmap(fn: Callable[..., Any], in_axes: InAxes = 0, out_axes: int = 0, backend: str = "numpy") -> VmapFunction:
    """``fn`` mapped over axis ``in_axes`` of its inputs (per input: an int, or None for a shared one), results stacked
    along ``out_axes``. Composes with ``kiln.grad``, ``kiln.compile`` and itself."""
    if isinstance(out_axes, bool) or not isinstance(out_axes, int):
        raise located_error(f"kiln.vmap: out_axes must be an int, got {out_axes!r} (torch.func.vmap's out_dims takes "
                            "None and tuples too)", kind=VmapError)
    return VmapFunction(fn, in_axes, out_axes, backend)
