"""fuse-elementwise: maximal groups of elementwise ops (broadcasting included) become one ``fused.elementwise``.

A reduction may join a group as its sink (nothing joins after it). A value
used outside its group becomes one of the fused op's results.

```
%s = "tensor.add"(%mm, %bias) ...                %s, %h = "fused.elementwise"(%mm, %bias)
%h = "tensor.relu"(%s) ...              ->           {ops = ["tensor.add", "tensor.relu"],
%m = "tensor.matmul"(%h, %w) ...                      args = [[0, 1], [2]], params = [[], []], yields = [2, 3]} ...
%g = "tensor.greater"(%s, %zero) ...             %m = "tensor.matmul"(%h, %w) ...
```

The fused op takes the place of the group's last member, so a group is legal
only when every outside reader of a member's value comes after that member.
Groups are grown greedily in program order: an op joins the union of its
operands' groups when legal, else the largest single one, else starts its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ops.fused import encode_params
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.manager import Pass, register_pass
from kiln.compiler.passes.rewrite import replace_uses


@dataclass(eq=False)
class Group:
    members: list[Op] = field(default_factory=list)
    closed: bool = False
    """A reduction sinks the group: nothing joins after it."""
    member_set: set[Op] = field(default_factory=set)
    readers: set[Op] = field(default_factory=set)
    """Ops outside the group that read a member's result (what decides where the group may still grow)."""

    def add(self, op: Op) -> None:
        self.members.append(op)
        self.member_set.add(op)
        self.readers.discard(op)
        self.readers.update(user for result in op.results for user, _ in result.uses if user not in self.member_set)

    def absorb(self, other: "Group") -> None:
        self.members.extend(other.members)
        self.member_set |= other.member_set
        self.readers = (self.readers | other.readers) - self.member_set


@register_pass
@dataclass(frozen=True)
class FuseElementwise(Pass):
    name = "fuse-elementwise"

    def run(self, graph: Graph) -> bool:
        groups = elementwise_groups(graph)
        outline_all(graph, groups, "fused.elementwise")
        return bool(groups)


def fusible_kind(op: Op) -> str | None:
    if len(op.results) != 1 or not op.operands:
        return None
    if has_trait(op.name, "elementwise"):
        return "elementwise"
    return "reduction" if has_trait(op.name, "reduction") else None


def elementwise_groups(graph: Graph) -> list[list[Op]]:
    """The fusion groups of ``graph`` (two ops or more each), members in program order."""
    position = {op: index for index, op in enumerate(graph.ops)}
    group_of: dict[Op, Group] = {}
    groups: dict[Group, None] = {}  # in creation order; a merged group leaves in O(1)
    for op in graph.ops:
        kind = fusible_kind(op)
        if kind is None:
            continue
        chosen = _choose(op, _operand_groups(op, group_of), position)
        if chosen is None and kind == "reduction":
            continue  # a reduction only ever sinks a group
        group = _merge(chosen or [], groups, group_of)
        group.add(op)
        group.closed = kind == "reduction"
        group_of[op] = group
    return [sorted(g.members, key=position.__getitem__) for g in groups if len(g.members) > 1]


def _operand_groups(op: Op, group_of: dict[Op, Group]) -> list[Group]:
    found: dict[int, Group] = {}
    for value in op.operands:
        group = group_of.get(value.producer) if value.producer is not None else None
        if group is not None and not group.closed:
            found.setdefault(id(group), group)
    return sorted(found.values(), key=lambda g: -len(g.members))


def _choose(op: Op, candidates: list[Group], position: dict[Op, int]) -> list[Group] | None:
    options = ([candidates] if len(candidates) > 1 else []) + [[group] for group in candidates]
    return next((option for option in options if _can_join(option, op, position)), None)


def _can_join(option: list[Group], op: Op, position: dict[Op, int]) -> bool:
    """Legal when no outside reader of a member's value runs before ``op`` (the fused op's place)."""
    place = position[op]
    for group in option:
        for reader in group.readers:
            if position[reader] < place and not any(reader in other.member_set for other in option):
                return False
    return True


def _merge(option: list[Group], groups: dict[Group, None], group_of: dict[Op, Group]) -> Group:
    if not option:
        group = Group()
        groups[group] = None
        return group
    keep, *others = option  # the largest first (_operand_groups): only the smaller groups' members move
    for other in others:
        keep.absorb(other)
        del groups[other]
        for member in other.members:
            group_of[member] = keep
    return keep


def outline_all(graph: Graph, groups: list[list[Op]], fused_name: str) -> None:
    """Replace every group (disjoint, members in program order) by one fused op where its last member stood, in one
    rebuild of the op list."""
    last = {members[-1]: members for members in groups}
    inside = {op for members in groups for op in members}
    ops, graph.ops = graph.ops, []
    for op in ops:
        if op in last:
            members = last[op]
            build_fused(graph, Builder(graph, location=op.location), members, fused_name)  # appended here
            for member in reversed(members):
                member.drop_operands()  # erased: not in the rebuilt list, read only by members
        elif op not in inside:
            graph.ops.append(op)


def build_fused(graph: Graph, builder: Builder, members: list[Op], fused_name: str) -> Op:
    inside = set(members)
    slots: dict[Value, int] = {}
    externals: list[Value] = []
    for op in members:
        for value in op.operands:
            if value.producer not in inside and value not in slots:
                slots[value] = len(externals)
                externals.append(value)
    for index, op in enumerate(members):
        slots[op.result] = len(externals) + index
    outputs = set(graph.outputs)
    yielded = [op.result for op in members if _used_outside(outputs, op.result, inside)]
    attrs = {
        "ops": tuple(op.name for op in members),
        "args": tuple(tuple(slots[v] for v in op.operands) for op in members),
        "params": tuple(encode_params(op.attrs) for op in members),
        "yields": tuple(slots[v] for v in yielded),
    }
    fused = builder.create_typed(fused_name, externals, attrs, [value.type for value in yielded])
    for old, new in zip(yielded, fused.results):
        new.name_hint = old.name_hint
        replace_uses(graph, old, new)
    return fused


def _used_outside(outputs: set[Value], value: Value, inside: set[Op]) -> bool:
    return value in outputs or any(user not in inside for user, _ in value.uses)
