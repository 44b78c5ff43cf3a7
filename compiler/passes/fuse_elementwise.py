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


@dataclass(eq=False)
class Group:
    members: list[Op] = field(default_factory=list)
    closed: bool = False
    """A reduction sinks the group: nothing joins after it."""


@register_pass
@dataclass(frozen=True)
class FuseElementwise(Pass):
    name = "fuse-elementwise"

    def run(self, graph: Graph) -> bool:
        groups = elementwise_groups(graph)
        for members in groups:
            outline(graph, members, "fused.elementwise")
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
    groups: list[Group] = []
    for op in graph.ops:
        kind = fusible_kind(op)
        if kind is None:
            continue
        chosen = _choose(op, _operand_groups(op, group_of), position)
        if chosen is None and kind == "reduction":
            continue  # a reduction only ever sinks a group
        group = _merge(chosen or [], groups)
        group.members.append(op)
        group.closed = kind == "reduction"
        for member in group.members:
            group_of[member] = group
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
    members = {member for group in option for member in group.members} | {op}
    for member in members - {op}:
        for result in member.results:
            for user, _ in result.uses:
                if user not in members and position[user] < position[op]:
                    return False
    return True


def _merge(option: list[Group], groups: list[Group]) -> Group:
    if not option:
        groups.append(Group())
        return groups[-1]
    keep, *others = option
    for other in others:
        keep.members.extend(other.members)
        groups.remove(other)
    return keep


def outline(graph: Graph, members: list[Op], fused_name: str) -> Op:
    """Replace ``members`` (in program order) by one fused op placed where the last member stood."""
    slots: dict[Value, int] = {}
    externals: list[Value] = []
    for op in members:
        for value in op.operands:
            if value.producer not in members and value not in slots:
                slots[value] = len(externals)
                externals.append(value)
    for index, op in enumerate(members):
        slots[op.result] = len(externals) + index
    inside = set(members)
    yielded = [op.result for op in members if _used_outside(graph, op.result, inside)]
    attrs = {
        "ops": tuple(op.name for op in members),
        "args": tuple(tuple(slots[v] for v in op.operands) for op in members),
        "params": tuple(encode_params(op.attrs) for op in members),
        "yields": tuple(slots[v] for v in yielded),
    }
    fused = Builder(graph, insert_before=members[-1], location=members[-1].location).create(fused_name, externals, attrs)
    for old, new in zip(yielded, fused.results):
        new.name_hint = old.name_hint
        graph.replace_all_uses(old, new)
    for op in reversed(members):
        graph.erase(op)
    return fused


def _used_outside(graph: Graph, value: Value, inside: set[Op]) -> bool:
    return value in graph.outputs or any(user not in inside for user, _ in value.uses)
