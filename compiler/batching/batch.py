"""The batching walk: a per-example graph replayed, op by op, as batched ops in another graph (JAX's ``BatchTrace``).

```
per-example graph                                batched ops emitted into the caller's graph
  %y = "tensor.reduce_sum"(%x) {axes = none}  ->   %y = "tensor.reduce_sum"(%xs) {axes = (1, 2)}
  %z = "tensor.mul"(%y, %w)                   ->   %z = "tensor.mul"(%y, %w)            (%w shared: unbatched)
```

Every value is either batched (the batch axis at 0) or unbatched (one value
for every example). An op with no batched operand is copied as it is; any
other goes through its rule in ``BATCHING_RULES``; an elementwise op without
one uses the elementwise rule; a composite without one (or whose rule declines)
has its decomposition batched instead. Only the ops the outputs need are
visited, so an unbatchable op whose result is dropped costs nothing.
"""

from __future__ import annotations

from typing import Sequence

from kiln.compiler.batching.rules import BATCHING_RULES, Batched, BatchingError, BatchingRule, elementwise_batch
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import Dim, TensorType
from kiln.compiler.ops.registry import has_trait, lookup

Slot = tuple[Value, bool]
"""A value of the batched graph and whether it carries the batch axis (at 0)."""


def batch_graph(graph: Graph, builder: Builder, bindings: dict[Value, Slot], size: Dim) -> list[Slot]:
    """Emit ``graph``'s ops with ``builder``, batched; ``bindings`` gives each graph input's slot. Returns the outputs'.

    A value that ``graph`` does not define (an outer graph's value the traced function closed over) is unbatched.
    """
    slots = dict(bindings)
    for op in needed_ops(graph):
        results = batch_op(builder, op, [slots.get(value, (value, False)) for value in op.operands], size)
        slots.update(zip(op.results, results))
    return [slots.get(value, (value, False)) for value in graph.outputs]


def needed_ops(graph: Graph) -> list[Op]:
    """The ops the outputs depend on, in graph order."""
    needed, kept = {id(value) for value in graph.outputs}, []
    for op in reversed(graph.ops):
        if any(id(result) in needed for result in op.results):
            kept.append(op)
            needed.update(id(operand) for operand in op.operands)
    return kept[::-1]


def batch_op(builder: Builder, op: Op, operands: Sequence[Slot], size: Dim) -> list[Slot]:
    builder.location = op.location
    values = [value for value, _ in operands]
    if not any(batched for _, batched in operands):
        copy = builder.create(op.name, values, dict(op.attrs))
        return [_slot(op, expected, result, size) for expected, result in zip(op.results, copy.results)]
    rule = rule_for(op)
    results = rule(builder, op, Batched(tuple(values), tuple(b for _, b in operands), size, op)) if rule else None
    if results is None:
        return batch_decomposition(builder, op, operands, size)
    results = results if isinstance(results, tuple) else (results,)
    return [_slot(op, expected, result, size) for expected, result in zip(op.results, results)]


def rule_for(op: Op) -> BatchingRule | None:
    """The op's rule; the elementwise rule for an elementwise op without its own; ``None`` for a composite without one."""
    rule = BATCHING_RULES.get(op.name)
    if rule is None and has_trait(op.name, "elementwise"):
        return elementwise_batch
    if rule is None and not lookup(op.name).is_composite:
        raise missing_rule(op)
    return rule


def batch_decomposition(builder: Builder, op: Op, operands: Sequence[Slot], size: Dim) -> list[Slot]:
    """Batch the per-example decomposition of composite ``op``, built in a scratch graph over its operand types."""
    scratch = Graph(f"{op.name} decomposed")
    inputs = [scratch.add_input(value.type) for value in op.operands]
    results = lookup(op.name).decomposition(Builder(scratch, location=op.location), *inputs, **op.attrs)
    scratch.outputs = list(results) if isinstance(results, tuple) else [results]
    return batch_graph(scratch, builder, dict(zip(inputs, operands)), size)


def _slot(op: Op, expected: Value, result: Value, size: Dim) -> Slot:
    """``result``'s slot, after checking that it is ``expected`` (the per-example result) with or without the batch axis."""
    result.name_hint = result.name_hint or expected.name_hint
    if result.type == expected.type:
        return result, False
    if result.type == TensorType((size,) + expected.type.shape, expected.type.dtype):
        return result, True
    raise BatchingError(f"the batching rule of {op.name} (from {op.location}) made {result.type} for the per-example "
                        f"{expected.type} over a batch of {size}; this is a bug in kiln's rule, please report it")


def missing_rule(op: Op) -> BatchingError:
    return BatchingError(
        f"kiln.vmap has no batching rule for {op.name!r} (traced at {op.location or 'an unknown line'}); compute it "
        f"outside the vmapped function, loop over the examples, or register a rule with @batching_rule({op.name!r}) "
        f"(kiln.compiler.batching); rules exist for {', '.join(sorted(BATCHING_RULES))} and every elementwise op"
    )
