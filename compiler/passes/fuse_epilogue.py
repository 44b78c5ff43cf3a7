"""fuse-epilogue: a matmul and the elementwise ops that consume only its result (bias, activation) become one ``fused.matmul``.

```
%mm = "tensor.matmul"(%x, %w) ...                       %s, %h = "fused.matmul"(%x, %w, %bias)
%s, %h = "fused.elementwise"(%mm, %bias)       ->           {ops = ["tensor.matmul", "tensor.add", "tensor.relu"],
    {ops = ["tensor.add", "tensor.relu"], ...}               args = [[0, 1], [3, 2], [4]], params = [[], [], []],
                                                             yields = [4, 5]} ...
```

The epilogue is the matmul's only reader: a ``fused.elementwise`` without a
reduction, or a chain of single-reader elementwise ops (when
``fuse-elementwise`` did not run first).
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.compiler.ir.core import Graph, Op
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.decompose import decompose_op
from kiln.compiler.passes.fuse_elementwise import outline
from kiln.compiler.passes.manager import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class FuseEpilogue(Pass):
    name = "fuse-epilogue"

    def run(self, graph: Graph) -> bool:
        changed = False
        for op in list(graph.ops):
            if op.name == "tensor.matmul" and op in graph.ops:
                epilogue = epilogue_of(graph, op)
                if epilogue:
                    outline(graph, [op, *epilogue], "fused.matmul")
                    changed = True
        return changed


def epilogue_of(graph: Graph, matmul: Op) -> list[Op]:
    """The ops to fuse after ``matmul`` (a fused group is unfused in place first), or ``[]``."""
    reader = _only_reader(graph, matmul)
    if reader is None:
        return []
    if reader.name == "fused.elementwise":
        if any(has_trait(name, "reduction") for name in reader.attrs["ops"]):
            return []
        return _unfuse(graph, reader)
    chain = []
    while reader is not None and has_trait(reader.name, "elementwise") and len(reader.results) == 1:
        chain.append(reader)
        reader = _only_reader(graph, reader)
    return chain


def _only_reader(graph: Graph, op: Op) -> Op | None:
    result = op.results[0]
    users = graph.users(result)
    return users[0] if len(users) == 1 and result not in graph.outputs else None


def _unfuse(graph: Graph, fused: Op) -> list[Op]:
    """Expand ``fused`` back into its sub-ops where it stood; returns them in order."""
    index, count = graph.ops.index(fused), len(graph.ops)
    decompose_op(graph, fused)
    return graph.ops[index : index + len(graph.ops) - count + 1]
