"""cse: common-subexpression elimination. Pure ops with equal names, operands and attrs merge.

Only within one checkpoint region marker (``find_twin``): ``rematerialize``'s recomputed copies stay apart
from the forward ops they copy.

```
%a = "tensor.exp"(%x) ...
%b = "tensor.exp"(%x) ...      ->   %a = "tensor.exp"(%x) ...
%c = "tensor.add"(%a, %b) ...       %c = "tensor.add"(%a, %a) ...
```
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from kiln.compiler.ir.core import Graph, Op, Value, drop_all_operands
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.ir.types import DType
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.manager import Pass, register_pass
from kiln.compiler.passes.rematerialize import KEPT_FREELY


@register_pass
@dataclass(frozen=True)
class CSE(Pass):
    name = "cse"

    def run(self, graph: Graph) -> bool:
        seen: dict[Hashable, Op] = {}
        replaced: dict[Value, Value] = {}
        for op in graph.ops:
            if not has_trait(op.name, "pure"):
                continue
            twin = find_twin(seen, op_key(op), op)
            if twin is not op:
                for old, new in zip(op.results, twin.results):
                    _rewire_readers(old, new)
                    replaced[old] = new
        if not replaced:
            return False
        _erase_all(graph, {value.producer for value in replaced}, replaced)
        return True


def find_twin(seen: dict[Hashable, Op], key: Hashable, op: Op) -> Op:
    """The earlier op ``op`` merges into, or ``op`` itself (then remembered).

    Ops merge only under one checkpoint region marker: a backward op merged into a checkpointed forward op would keep
    its value alive until the backward, and a ``recompute(k)`` copy merged into the forward's op would undo
    ``rematerialize``. An unmarked op may still reuse a value that lives anyway: a region's output or a recomputed copy;
    constants merge with any (``rematerialize.KEPT_FREELY``).
    """
    region = None if op.name in KEPT_FREELY else op.region  # constants merge across markers
    twin = seen.get((key, "kept")) or seen.get((key, None)) if region is None else seen.get((key, region))
    if twin is not None:
        return twin
    seen[(key, region)] = op
    if region is not None and region.role in ("output", "recompute"):
        seen.setdefault((key, "kept"), op)
    return op


def _rewire_readers(old: Value, new: Value) -> None:
    for user, index in list(old.uses):
        user.set_operand(index, new)


def _erase_all(graph: Graph, dead: set[Op], replaced: dict[Value, Value]) -> None:
    """Drop the merged duplicates in one rebuild of the op list (``graph.erase`` each would be quadratic)."""
    graph.outputs = [replaced.get(value, value) for value in graph.outputs]
    drop_all_operands(dead)
    graph.ops = [op for op in graph.ops if op not in dead]


COMMUTATIVE = frozenset({"tensor.add", "tensor.mul", "tensor.maximum", "tensor.minimum", "tensor.equal", "tensor.not_equal"})
"""Binary ops whose operand order does not matter (``x * y`` and ``y * x`` merge); IEEE add and mul commute exactly."""


def op_key(op: Op) -> Hashable:
    """What makes two pure ops compute the same thing."""
    operands = tuple(map(id, op.operands))
    if op.name in COMMUTATIVE:
        operands = tuple(sorted(operands))
    return (op.name, operands, tuple((k, hashable_attr(v)) for k, v in op.attrs.items()))


def hashable_attr(value: Any) -> Hashable:
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, tuple):
        if all([type(item) is int for item in value]):
            return value  # axes, a shape, a permutation: hashable as they are (eager backwards key every op's)
        return tuple(hashable_attr(item) for item in value)
    if isinstance(value, float):
        return ("float", value)  # keeps 1 and 1.0 apart
    if isinstance(value, DType):
        return ("dtype", value.value)
    if isinstance(value, Graph):  # a sub-graph (custom.vjp's backward): equal when it prints the same
        return _FROZEN_KEYS.get(value) or ("graph", print_graph(value))
    return value


_FROZEN_KEYS: "weakref.WeakKeyDictionary[Graph, Hashable]" = weakref.WeakKeyDictionary()


def freeze_graph_key(graph: Graph, key: Hashable) -> None:
    """Key ``graph`` by ``key`` instead of its printed text: for a sub-graph never edited again and hashed at every step
    (a compiled call's backward, ``runtime/compiled_training.py``, keyed in each eager backward's chain structure)."""
    _FROZEN_KEYS[graph] = ("graph", key)
