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

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ops.fused import encode_params
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.fuse_elementwise import build_fused
from kiln.compiler.passes.manager import Pass, register_pass
from kiln.compiler.passes.rewrite import replace_uses


@register_pass
@dataclass(frozen=True)
class FuseEpilogue(Pass):
    name = "fuse-epilogue"

    def run(self, graph: Graph) -> bool:
        """Each fused group is built before its last member (a deferred insertion); the members leave the op list
        in one rebuild at the end, so the pass stays linear in the graph's size."""
        fused_away: set[Op] = set()
        for op in list(graph.ops):
            if op.name == "tensor.matmul" and op not in fused_away:
                fused_away |= fuse_matmul_epilogue(graph, op)
        if fused_away:
            graph.ops = [op for op in graph.ops if op not in fused_away]
        return bool(fused_away)


def fuse_matmul_epilogue(graph: Graph, matmul: Op) -> set[Op]:
    """Build ``matmul``'s ``fused.matmul`` with its epilogue; the ops it replaces (operands dropped), or none."""
    reader = _only_reader(graph, matmul)
    if reader is None:
        return set()
    if reader.name == "fused.elementwise":
        if any(has_trait(name, "reduction") for name in reader.attrs["ops"]):
            return set()
        members = [matmul, reader]
        _absorb_matmul(graph, matmul, reader)
    else:
        members = [matmul, *_elementwise_chain(graph, reader)]
        if len(members) == 1:
            return set()
        build_fused(graph, Builder(graph, insert_before=members[-1], location=members[-1].location), members, "fused.matmul")
    for member in members:
        member.drop_operands()
    return set(members)


def _elementwise_chain(graph: Graph, reader: Op | None) -> list[Op]:
    """Single-reader elementwise ops from ``reader`` on (when ``fuse-elementwise`` did not run first)."""
    chain = []
    while reader is not None and has_trait(reader.name, "elementwise") and len(reader.results) == 1:
        chain.append(reader)
        reader = _only_reader(graph, reader)
    return chain


def _only_reader(graph: Graph, op: Op) -> Op | None:
    result = op.results[0]
    users = graph.users(result)
    return users[0] if len(users) == 1 and result not in graph.outputs else None


def _absorb_matmul(graph: Graph, matmul: Op, fused: Op) -> Op:
    """A ``fused.matmul`` whose body is ``matmul`` then ``fused``'s body, built before ``fused``: slots numbered as
    ``fuse-elementwise`` numbers a group (external operands in order of first use, then each sub-op's result)."""
    product = matmul.results[0]
    externals: list[Value] = []
    for value in [*matmul.operands, *(fused.operands[slot] for arg in fused.attrs["args"] for slot in arg if slot < len(fused.operands))]:
        if value is not product and value not in externals:
            externals.append(value)
    old_count, first_result = len(fused.operands), len(externals) + 1  # the matmul's result is slot len(externals)

    def slot(old: int) -> int:
        if old >= old_count:
            return first_result + old - old_count
        value = fused.operands[old]
        return len(externals) if value is product else externals.index(value)

    attrs = {
        "ops": ("tensor.matmul", *fused.attrs["ops"]),
        "args": (tuple(externals.index(v) for v in matmul.operands), *(tuple(map(slot, arg)) for arg in fused.attrs["args"])),
        "params": (encode_params(matmul.attrs), *fused.attrs["params"]),
        "yields": tuple(map(slot, fused.attrs["yields"])),
    }
    builder = Builder(graph, insert_before=fused, location=fused.location)
    combined = builder.create_typed("fused.matmul", externals, attrs, [result.type for result in fused.results])
    for old, new in zip(fused.results, combined.results):
        new.name_hint = old.name_hint
        replace_uses(graph, old, new)
    return combined
