"""dce: dead-code elimination. Erases pure ops none of whose results reach an output.

```
%a = "tensor.exp"(%x) ...      // unused
%b = "tensor.neg"(%x) ...
return %b                       ->   %b = "tensor.neg"(%x) ...; return %b
```
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.compiler.ir.core import Graph, drop_all_operands
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.manager import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class DCE(Pass):
    name = "dce"

    def run(self, graph: Graph) -> bool:
        live = set(map(id, graph.outputs))
        kept, dead = [], []
        for op in reversed(graph.ops):
            if any(id(r) in live for r in op.results) or not has_trait(op.name, "pure"):
                kept.append(op)
                live.update(id(v) for v in op.operands)
            else:
                dead.append(op)
        drop_all_operands(dead)
        changed = len(kept) != len(graph.ops)
        graph.ops = kept[::-1]
        return changed
