"""decompose: expand composite ops into their primitives.

By default every composite expands; a backend passes ``keep`` (the composites it
lowers natively) so only the ones it lacks expand.

```
%y = "nn.softmax"(%x) {axis = -1}       ->   %m = "tensor.reduce_max"(%x) ...
                                              %e = "tensor.exp"(...) ...
                                              %y = "tensor.div"(%e, %s) ...
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ops.registry import lookup
from kiln.compiler.passes.manager import Pass, register_pass
from kiln.compiler.passes.rewrite import replace_uses


@register_pass
@dataclass(frozen=True)
class Decompose(Pass):
    name = "decompose"
    keep: frozenset[str] = frozenset()
    """Composite op names to leave alone (the backend lowers them)."""

    def run(self, graph: Graph) -> bool:
        return decompose_where(graph, lambda op: op.name not in self.keep)


def decompose_where(graph: Graph, should_expand: Callable[[Op], bool]) -> bool:
    """Expand every composite op for which ``should_expand`` holds, repeatedly, until none is left."""
    changed = False
    while True:
        targets = {op for op in graph.ops if lookup(op.name).is_composite and should_expand(op)}
        if not targets:
            return changed
        _expand_all(graph, targets)
        changed = True


def _expand_all(graph: Graph, targets: set[Op]) -> None:
    """One rebuild of the op list, each target's decomposition appended where it stood.

    (``decompose_op`` per target would search the list for every insertion: quadratic in the graph's size.)
    """
    ops, graph.ops = graph.ops, []
    for op in ops:
        if op in targets:
            _replace_by_decomposition(graph, op, Builder(graph, location=op.location, region=op.region))
            op.drop_operands()  # erased: it is not in the rebuilt list, and nothing reads its results now
        else:
            graph.ops.append(op)


def decompose_op(graph: Graph, op: Op) -> tuple[Value, ...]:
    """Replace ``op`` by its decomposition, inserted where it stood; returns the values that replace its results."""
    results = _replace_by_decomposition(graph, op, Builder(graph, insert_before=op, location=op.location))
    graph.erase(op)
    return results


def _replace_by_decomposition(graph: Graph, op: Op, builder: Builder) -> tuple[Value, ...]:
    results = lookup(op.name).decomposition(builder, *op.operands, **op.attrs)
    results = results if isinstance(results, tuple) else (results,)
    for old, new in zip(op.results, results):
        if new.name_hint is None:
            new.name_hint = old.name_hint
        replace_uses(graph, old, new)
    return results
