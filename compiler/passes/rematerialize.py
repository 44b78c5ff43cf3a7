"""rematerialize: recompute activation-checkpoint regions in the backward instead of keeping them alive.

Ops traced inside ``kiln.utils.checkpoint.checkpoint`` carry ``checkpoint(k)``
(their results are the region's internal values) or ``checkpoint(k, output)``
(what the region returns). In the joint forward+backward graph, every read of
an internal value by an op outside region ``k`` (a VJP rule reading an
activation) is redirected to a copy, ``recompute(k)``, of the region ops that
compute it from the region's saved values: its inputs, its outputs, graph
outputs, constants and the results of impure ops. Each copy is placed just before the
first op that reads it, so the forward's internal values die inside the
forward and the recomputed ones live only across their stretch of the
backward. Random ops draw from a seed operand and a stream (no state), so a
recomputed dropout draws the forward's mask.

```
%h = "tensor.matmul"(%x, %w) ... checkpoint(0)                 %h = "tensor.matmul"(%x, %w) ... checkpoint(0)
%a = "tensor.tanh"(%h) ... checkpoint(0, output)               %a = "tensor.tanh"(%h) ... checkpoint(0, output)
...                                                      ->    ...
%d = "tensor.mul"(%g, %h) ...                                  %h.recompute = "tensor.matmul"(%x, %w) ... recompute(0)
                                                               %d = "tensor.mul"(%g, %h.recompute) ...
```

``cse`` never merges a ``recompute(k)`` copy into the forward's op (it merges
ops only under one region marker: ``cse.find_twin``), and
``dce`` then drops forward ops whose only readers were in the backward.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from kiln.compiler.ir.core import Graph, Op, Region, Value
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.manager import Pass, register_pass

KEPT_FREELY = frozenset({"tensor.constant"})
"""Ops whose results are kept, never recomputed, and merge across region markers in ``cse``: a constant holds no
activation (the memory plan gives it no buffer), and a recomputed copy reading the forward's keeps ``cse``'s merges
of the ops downstream (an attention gradient's softmax with the recomputed one)."""

LateUse = tuple[Op, int, Value]
"""``(reader, operand index, internal value)``: a read of a region's internal value from outside the region."""


@register_pass
@dataclass(frozen=True)
class Rematerialize(Pass):
    name = "rematerialize"

    def run(self, graph: Graph) -> bool:
        changed = False
        for region, members in forward_regions(graph).items():
            changed |= rematerialize_region(graph, region, members)
        return changed


def forward_regions(graph: Graph) -> dict[int, list[Op]]:
    """Each checkpoint region's traced ops (``checkpoint(k)`` and ``checkpoint(k, output)``), in program order."""
    regions: dict[int, list[Op]] = defaultdict(list)
    for op in graph.ops:
        if op.region is not None and op.region.role != "recompute":
            regions[op.region.id].append(op)
    return dict(sorted(regions.items()))


def rematerialize_region(graph: Graph, region: int, members: list[Op]) -> bool:
    """Redirect every late use of the region's internal values to recomputed copies; whether any was found."""
    internal = internal_values(graph, members)
    late = late_uses(internal, members)
    if not late:
        return False
    needed = ops_to_recompute(graph, {value for _, _, value in late}, internal)
    copies = insert_copies(graph, needed, anchors(graph, needed, late), Region(region, "recompute"))
    for reader, index, value in late:
        reader.set_operand(index, copies[value])
    return True


def internal_values(graph: Graph, members: list[Op]) -> dict[Value, None]:
    """Results of the region's pure, non-output ops that are not graph outputs or constants (what need not stay
    alive), in order."""
    outputs = set(graph.outputs)
    return {
        result: None for op in members if op.region.role == "checkpoint" and has_trait(op.name, "pure")  # type: ignore[union-attr]
        and op.name not in KEPT_FREELY for result in op.results if result not in outputs
    }


def late_uses(internal: dict[Value, None], members: list[Op]) -> list[LateUse]:
    """Reads of internal values by ops outside the region: the backward's (or, rarely, a later forward op's)."""
    inside = set(members)
    return [(reader, index, value) for value in internal for reader, index in value.uses if reader not in inside]


def ops_to_recompute(graph: Graph, wanted: set[Value], internal: dict[Value, None]) -> list[Op]:
    """The region ops computing ``wanted`` back from saved values (operands that are not internal), in program order."""
    needed: set[Op] = set()
    pending = [value.producer for value in wanted]
    while pending:
        op = pending.pop()
        if op is not None and op not in needed:
            needed.add(op)
            pending += [operand.producer for operand in op.operands if operand in internal]
    return [op for op in graph.ops if op in needed]


def anchors(graph: Graph, needed: list[Op], late: list[LateUse]) -> dict[Op, Op]:
    """For each op to recompute, the first op that reads its copy: a late reader, or the anchor of a copy reading it."""
    position = {op: index for index, op in enumerate(graph.ops)}
    readers: dict[Value, list[Op]] = defaultdict(list)
    for reader, _, value in late:
        readers[value].append(reader)
    needed_set, anchor = set(needed), {}
    for op in reversed(needed):  # a consumer's anchor is known before its producer's
        candidates = [reader for result in op.results for reader in readers[result]]
        candidates += [anchor[user] for result in op.results for user, _ in result.uses if user in needed_set]
        anchor[op] = min(candidates, key=position.__getitem__)
    return anchor


def insert_copies(graph: Graph, needed: list[Op], anchor: dict[Op, Op], region: Region) -> dict[Value, Value]:
    """A ``recompute`` copy of each op right before its anchor, in program order; the original values -> the copies'."""
    copies: dict[Value, Value] = {}
    for op in needed:
        operands = [copies.get(operand, operand) for operand in op.operands]
        copy = Op(op.name, operands, [result.type for result in op.results], op.attrs, op.location, region)
        for old, new in zip(op.results, copy.results):
            new.name_hint = f"{old.name_hint}.recompute" if old.name_hint else None
            copies[old] = new
        graph.insert_before(copy, anchor[op])
    return copies
