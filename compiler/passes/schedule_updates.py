"""schedule-updates: each optimizer update runs as soon as its gradient is ready, not after the whole backward.

The step graph appends the ``optim.*`` updates after every gradient. A weight gradient's matmul that fuses into its
SGD update (``fuse-epilogue``) is then computed at the end too, so every layer's activation and output gradient
stays alive through the whole backward, and the memory plan's peak is the sum of them all. This pass moves each
update to just after the last op it must follow: the producers of its operands, and every other reader of an
input it updates in place (the parameter and its state: a layer's input gradient reads the old weight). A
graph-wide update (a clipped gradient's norm) is read by every update, which then stays where it is.

```
%dw2 = "tensor.matmul"(%g2t, %a1)          %dw2 = "tensor.matmul"(%g2t, %a1)
%dx2 = "tensor.matmul"(%g2, %w2)           %dx2 = "tensor.matmul"(%g2, %w2)
... the rest of the backward ...     ->    %w2.new = "optim.sgd_update"(%w2, %dw2, %lr)
%w2.new = "optim.sgd_update"(...)          ... the rest of the backward ...
```

Values are unchanged: only the order moves, and no op reads a parameter (or a view of it: a transpose, a reshape)
after its update.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.manager import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class ScheduleUpdates(Pass):
    name = "schedule-updates"

    def run(self, graph: Graph) -> bool:
        ops = graph.ops
        position = {op: index for index, op in enumerate(ops)}
        inputs = set(graph.inputs)
        after: dict[Op | None, list[Op]] = defaultdict(list)
        for op in ops:
            if op.name.startswith("optim.") and op.name.endswith("_update"):
                anchor = _last_dependency(op, position, inputs)
                if anchor is None or position[anchor] < position[op] - 1:
                    after[anchor].append(op)
        if not after:
            return False
        moved = {op for group in after.values() for op in group}
        kept = [op for op in ops if op not in moved]
        graph.ops = [placed for op in after.pop(None, []) + kept for placed in _with_followers(op, after)]
        return True


def _with_followers(op: Op, after: dict[Op | None, list[Op]]) -> list[Op]:
    """``op``, then the updates placed after it, each with its own followers: an update anchored on another update
    (a second optimizer stepping the parameter the first updated) moves with it."""
    return [op, *(placed for follower in after.get(op, ()) for placed in _with_followers(follower, after))]


def _last_dependency(update: Op, position: dict[Op, int], inputs: set[Value]) -> Op | None:
    """The latest op ``update`` must follow: its operands' producers and the other readers of its graph-input
    operands (what it overwrites in place) or of their views, save other updates (which only share ``lr`` and
    ``step``)."""
    dependencies = [operand.producer for operand in update.operands if operand.producer is not None]
    for operand in update.operands:
        if operand in inputs:
            dependencies += [reader for alias in _aliases(operand) for reader, _ in alias.uses
                             if reader is not update and not _is_update(reader)]
    return max(dependencies, key=position.__getitem__, default=None)


def _aliases(value: Value) -> list[Value]:
    """``value`` and what movement ops make of it, transitively: a backend may keep them as views of its array
    (NumPy's ``w.T``), which an in-place update would change under their readers."""
    found, pending = [value], [value]
    while pending:
        for reader, _ in pending.pop().uses:
            if has_trait(reader.name, "movement"):
                found += reader.results
                pending += reader.results
    return found


def _is_update(op: Op) -> bool:
    return op.name.startswith("optim.") and op.name.endswith("_update")
