"""plan-memory: liveness, buffer reuse, in-place updates and a peak-bytes report.

The plan is an analysis: the IR does not change, ``graph.memory_plan`` holds
the result and ``kiln-opt`` prints its report after the IR.

```
%t = "tensor.exp"(%x) ...                 // plan: b0 = tensor<Nx8xf32>
%u = "tensor.neg"(%t) ...         ->      //   %t -> b0, %u -> b0 (in place: %t dies here)
%w.new = "tensor.sub"(%w, %g) ...         //   %w.new -> %w (donated input, updated in place)
```

Fused ops are planned per sub-op, so a group's intermediates get buffers too.
Each step is one of: ``buffer`` (writes its own, plannable storage), ``opaque``
(the backend allocates it; it may alias its operands) and ``constant``. A
storage is live from its definition to the last read of any value that may
alias it; a dying operand's buffer is reused in place by elementwise steps of
the same type; graph outputs get fresh storage per call unless a donated input
of the same type is dead by then (a parameter updated in place).

Where the backend allows it (``Policy.concat_regions``), a value that a
``tensor.concat`` reads (directly, or stacked by an ``expand_dims`` over the
concat's axis) is computed straight into its contiguous part of the concat's
buffer, so the concat copies nothing: an unrolled RNN's per-step outputs land
in the stacked array its next layer and its weight gradients read.

```
%h0 = "tensor.tanh"(%a) ...               // plan: %s -> b0, allocated at %h0
%h1 = "tensor.tanh"(%b) ...               //   %h0 -> b0[0], %h1 -> b0[1] (concat parts)
%e0 = "tensor.expand_dims"(%h0) {axes = [0]}
%e1 = "tensor.expand_dims"(%h1) {axes = [0]}
%s = "tensor.concat"(%e0, %e1) {axis = 0} //   copies nothing
```
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import TensorType, dim_value
from kiln.compiler.ops.fused import sub_op_attrs
from kiln.compiler.ops.registry import has_trait, infer_types
from kiln.compiler.passes.manager import Pass, register_pass

Key = Hashable
"""A graph ``Value``, or ``(fused op, sub-op index)`` for a value inside a fused op."""


@dataclass(eq=False)
class Step:
    """One computed value, in execution order."""

    key: Key
    op_name: str
    operands: tuple[Key, ...]
    type: TensorType
    attrs: dict[str, Any]
    kind: str
    """``buffer``, ``opaque`` or ``constant``."""
    in_place: bool = False
    """May write into an operand's storage of its own type (elementwise)."""


@dataclass
class Policy:
    """What a backend can do: which ops write into given storage, which of those may overwrite an operand."""

    writes_into: Callable[[str], bool]
    in_place: Callable[[str], bool]
    concat_regions: bool = False
    """A concat's operands may be computed into their parts of its buffer (``concat_regions``): the backend writes
    a ``Region`` key through an indexed view of the concat's storage and a concat only copies its other operands."""


@dataclass(frozen=True)
class Region:
    """The part of a concat's buffer that one value is computed into: ``[start:stop]`` along ``axis`` (every axis
    before it has size 1, so the part is contiguous), or the single index ``start`` there (that axis dropped) when
    the concat reads the value through an ``expand_dims`` over its axis."""

    concat: Key
    axis: int
    start: int
    stop: int
    squeezed: bool


DEFAULT_POLICY = Policy(
    writes_into=lambda name: has_trait(name, "elementwise") or has_trait(name, "reduction") or name == "tensor.matmul",
    in_place=lambda name: has_trait(name, "elementwise") and name not in ("tensor.where", "tensor.cast"),
)


@dataclass
class MemoryPlan:
    """Where every computed value lives; ``report`` renders it."""

    steps: list[Step]
    key_of: dict[Value, Key]
    """Graph values -> keys (fused results map to their sub-op's key)."""
    buffers: list[TensorType] = field(default_factory=list)
    buffer_of: dict[Key, int] = field(default_factory=dict)
    """Planned keys -> buffer index."""
    donated: dict[Key, int] = field(default_factory=dict)
    """Keys written into the storage of graph input #i."""
    fresh: set[Key] = field(default_factory=set)
    """Buffer steps whose storage is allocated per call (graph outputs)."""
    in_place: set[Key] = field(default_factory=set)
    """Keys that took over a dying operand's buffer."""
    region_of: dict[Key, Region] = field(default_factory=dict)
    """Keys computed into part of a concat's buffer (``Policy.concat_regions``); not in ``buffer_of``."""
    roots: dict[Key, frozenset[Key]] = field(default_factory=dict)
    """The storages each key may point into (``storage_roots``)."""
    last_use: dict[Key, int] = field(default_factory=dict)
    """Storage -> the last step reading it (``len(steps)``: returned)."""
    inputs: list[Value] = field(default_factory=list)
    step_by_key: dict[Key, Step] = field(default_factory=dict)

    def type_of(self, key: Key) -> TensorType:
        return key.type if isinstance(key, Value) else self.step_by_key[key].type

    def report(self, symbols: dict[str, int] | None = None) -> str:
        return plan_report(self, symbols or {})


@register_pass
@dataclass(frozen=True)
class PlanMemory(Pass):
    name = "plan-memory"
    donate: str = ""
    """``"input:output,..."`` pairs: graph input #i may be overwritten by output #j (a parameter's update)."""

    def run(self, graph: Graph) -> bool:
        donations = parse_donations(self.donate) or getattr(graph, "donations", {})
        graph.memory_plan = plan_memory(graph, DEFAULT_POLICY, donations)  # type: ignore[attr-defined]
        return False


def parse_donations(text: str) -> dict[int, int]:
    pairs = [item.split(":") for item in text.split(",") if item.strip()]
    return {int(source): int(target) for source, target in pairs}


# Schedule: the graph as a list of steps, fused ops expanded.


def schedule(graph: Graph, policy: Policy) -> tuple[list[Step], dict[Value, Key]]:
    steps: list[Step] = []
    key_of: dict[Value, Key] = {value: value for value in graph.inputs}
    for op in graph.ops:
        if has_trait(op.name, "fused"):
            _schedule_fused(op, steps, key_of, policy)
        else:
            _schedule_op(op, steps, key_of, policy)
    return steps, key_of


def _kind(name: str, policy: Policy) -> str:
    if name == "tensor.constant":
        return "constant"
    return "buffer" if policy.writes_into(name) else "opaque"


def _schedule_op(op: Op, steps: list[Step], key_of: dict[Value, Key], policy: Policy) -> None:
    operands = tuple(key_of[v] for v in op.operands)
    kind = _kind(op.name, policy) if len(op.results) == 1 else "opaque"
    for result in op.results:
        steps.append(Step(result, op.name, operands, result.type, op.attrs, kind, policy.in_place(op.name)))
        key_of[result] = result


def _schedule_fused(op: Op, steps: list[Step], key_of: dict[Value, Key], policy: Policy) -> None:
    slots: list[Key] = [key_of[v] for v in op.operands]
    types = [v.type for v in op.operands]
    for index, (name, args, params) in enumerate(zip(op.attrs["ops"], op.attrs["args"], op.attrs["params"])):
        attrs = sub_op_attrs(name, params)
        (result_type,) = infer_types(name, [types[slot] for slot in args], attrs)
        key = (op, index)
        steps.append(Step(key, name, tuple(slots[slot] for slot in args), result_type, attrs, _kind(name, policy), policy.in_place(name)))
        slots.append(key)
        types.append(result_type)
    for result, slot in zip(op.results, op.attrs["yields"]):
        key_of[result] = slots[slot]


# Liveness.


def storage_roots(steps: list[Step], inputs: list[Value]) -> dict[Key, frozenset[Key]]:
    """The storages each value may live in: its own, or (opaque results) its operands' too."""
    roots: dict[Key, frozenset[Key]] = {value: frozenset({value}) for value in inputs}
    for step in steps:
        if step.kind == "constant":
            roots[step.key] = frozenset()
        elif step.kind == "buffer":
            roots[step.key] = frozenset({step.key})
        else:
            roots[step.key] = frozenset({step.key}).union(*(roots[o] for o in step.operands))
    return roots


def last_uses(steps: list[Step], roots: dict[Key, frozenset[Key]], outputs: list[Key]) -> dict[Key, int]:
    """Storage -> index of the last step reading it (``len(steps)`` when a graph output may hold it)."""
    last: dict[Key, int] = {}
    for index, step in enumerate(steps):
        last.setdefault(step.key, index)
        for operand in step.operands:
            for root in roots[operand]:
                last[root] = index
    for output in outputs:
        for root in roots[output]:
            last[root] = len(steps)
    return last


# Allocation.


def plan_memory(graph: Graph, policy: Policy = DEFAULT_POLICY, donations: dict[int, int] | None = None) -> MemoryPlan:
    steps, key_of = schedule(graph, policy)
    plan = MemoryPlan(steps, key_of, inputs=list(graph.inputs), step_by_key={step.key: step for step in steps})
    plan.roots = storage_roots(steps, graph.inputs)
    outputs = [key_of[v] for v in graph.outputs]
    plan.last_use = last_uses(steps, plan.roots, outputs)
    targets = _donation_targets(graph, outputs, donations or {})
    if policy.concat_regions:
        plan.region_of = concat_regions(plan)
    free: dict[TensorType, list[int]] = defaultdict(list)
    for index, step in enumerate(steps):
        if step.key in plan.region_of:
            _allocate(plan, plan.region_of[step.key].concat, free)  # the concat's buffer, from its first part on
        elif step.kind == "buffer" and step.key not in plan.buffer_of:
            _place(plan, index, step, targets, free)
        _release(plan, index, step, free)
    return plan


def _donation_targets(graph: Graph, outputs: list[Key], donations: dict[int, int]) -> dict[Key, int]:
    """Output key -> input index whose storage it may take (each input once, never an input that is returned)."""
    targets: dict[Key, int] = {}
    for source, target in donations.items():
        if 0 <= source < len(graph.inputs) and 0 <= target < len(outputs) and graph.inputs[source] not in outputs:
            if graph.inputs[source].type == graph.outputs[target].type and outputs.count(outputs[target]) == 1:
                targets.setdefault(outputs[target], source)
    return targets


def _place(plan: MemoryPlan, index: int, step: Step, targets: dict[Key, int], free: dict[TensorType, list[int]]) -> None:
    if plan.last_use[step.key] == len(plan.steps):  # a graph output (or aliased by one)
        source = targets.get(step.key)
        if source is not None and _may_overwrite(plan, index, step, plan.inputs[source]):
            plan.donated[step.key] = source
        else:
            plan.fresh.add(step.key)
        return
    reused = _in_place_candidate(plan, index, step)
    if reused is not None:
        plan.buffer_of[step.key] = plan.buffer_of[reused]
        plan.in_place.add(step.key)
    else:
        _allocate(plan, step.key, free)


def _allocate(plan: MemoryPlan, key: Key, free: dict[TensorType, list[int]]) -> None:
    """A free buffer of ``key``'s type, or a new one (nothing if ``key`` has one already)."""
    if key in plan.buffer_of:
        return
    type = plan.type_of(key)
    if free[type]:
        plan.buffer_of[key] = free[type].pop()
    else:
        plan.buffer_of[key] = len(plan.buffers)
        plan.buffers.append(type)


def _in_place_candidate(plan: MemoryPlan, index: int, step: Step) -> Key | None:
    for operand in step.operands:
        if operand in plan.buffer_of and _may_overwrite(plan, index, step, operand):
            return operand
    return None


def _may_overwrite(plan: MemoryPlan, index: int, step: Step, storage: Key) -> bool:
    """``step`` may write into ``storage``: same type, dead after this step, read here only as itself, elementwise."""
    if plan.type_of(storage) != step.type or plan.last_use.get(storage, -1) > index:
        return False
    readers = [operand for operand in step.operands if storage in plan.roots[operand]]
    if not readers:
        return True
    return step.in_place and all(operand == storage for operand in readers)


# Concat regions.


def concat_regions(plan: MemoryPlan) -> dict[Key, Region]:
    """Values each computed into its part of a concat's buffer (``Policy.concat_regions``). A concat whose buffer
    is planned takes an operand computed by a buffer step that nothing returns and no other concat took, when the
    parts are contiguous (every axis before the concat's has size 1) and their sizes on the axis static. Each
    concat's storage then lives as long as any of its parts is read (``last_use`` extended)."""
    regions: dict[Key, Region] = {}
    for step in plan.steps:
        if step.op_name == "tensor.concat" and step.kind == "buffer" and plan.last_use[step.key] < len(plan.steps):
            regions.update(_concat_parts(plan, step, regions))
    for key, region in regions.items():
        plan.last_use[region.concat] = max(plan.last_use[region.concat], plan.last_use[key])
    return regions


def _concat_parts(plan: MemoryPlan, concat: Step, taken: dict[Key, Region]) -> dict[Key, Region]:
    axis = concat.attrs["axis"] % concat.type.rank
    if any(dim != 1 for dim in concat.type.shape[:axis]):
        return {}  # the parts would not be contiguous
    parts: dict[Key, Region] = {}
    repeated, concats = Counter(concat.operands), {region.concat for region in taken.values()}
    start = 0
    for operand in concat.operands:
        size = plan.type_of(operand).shape[axis]
        if not isinstance(size, int):
            break  # the offsets after a symbolic size are not static
        value, squeezed = _stacked_value(plan, operand, axis)
        if repeated[operand] == 1 and value not in concats and _may_be_part(plan, value, taken, parts):
            parts[value] = Region(concat.key, axis, start, start + size, squeezed)
        start += size
    return parts


def _stacked_value(plan: MemoryPlan, operand: Key, axis: int) -> tuple[Key, bool]:
    """``(x, True)`` for an operand ``expand_dims(x)`` over exactly the concat's axis, else ``(operand, False)``."""
    step = plan.step_by_key.get(operand)
    if step is not None and step.op_name == "tensor.expand_dims" and step.kind == "opaque":
        if tuple(a % step.type.rank for a in step.attrs["axes"]) == (axis,):
            return step.operands[0], True
    return operand, False


def _may_be_part(plan: MemoryPlan, key: Key, taken: dict[Key, Region], parts: dict[Key, Region]) -> bool:
    """Computed by a buffer step (no graph input), not returned, not yet a part (a concat with parts is none)."""
    step = plan.step_by_key.get(key)
    return step is not None and step.kind == "buffer" and plan.last_use[key] < len(plan.steps) and key not in taken and key not in parts


def _release(plan: MemoryPlan, index: int, step: Step, free: dict[TensorType, list[int]]) -> None:
    """Return the buffers of storages that die at this step, except one this step took over in place."""
    dying = {root for operand in step.operands for root in plan.roots[operand] if plan.last_use[root] == index}
    if plan.last_use.get(step.key) == index:
        dying.add(step.key)  # a result nobody reads
    freed = set()
    for root in dying:
        buffer = plan.buffer_of.get(root)
        if buffer is None or (root != step.key and buffer == plan.buffer_of.get(step.key)):
            continue
        freed.add(buffer)
    for buffer in sorted(freed):
        free[plan.buffers[buffer]].append(buffer)


# Report.


def type_bytes(type: TensorType, symbols: dict[str, int]) -> int:
    dims = [dim_value(d, symbols, default=1) for d in type.shape]
    return math.prod(dims) * type.dtype.numpy.itemsize


def plan_report(plan: MemoryPlan, symbols: dict[str, int]) -> str:
    """Buffers, what lives in each, and bytes: pooled vs one allocation per value (symbols at ``symbols``, default 1)."""
    names = _key_names(plan)
    planned = [step for step in plan.steps if buffer_holding(plan, step.key) is not None]
    pooled = sum(type_bytes(t, symbols) for t in plan.buffers)
    naive = sum(type_bytes(step.type, symbols) for step in planned)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(symbols.items())) or "symbols=1"
    lines = [f"// memory plan: {len(planned)} values in {len(plan.buffers)} buffers, {len(plan.in_place)} in place, "
             f"{len(plan.donated)} donated, {len(plan.fresh)} fresh outputs",
             f"// peak bytes: {peak_bytes(plan, symbols)} (pooled {pooled}, unplanned {naive}; {shown})"]
    for buffer, type in enumerate(plan.buffers):
        holders = ", ".join(names[s.key] for s in planned if buffer_holding(plan, s.key) == buffer)
        lines.append(f"//   b{buffer}: {type} <- {holders}")
    for key, source in plan.donated.items():
        lines.append(f"//   {names[key]} -> input #{source} (in place)")
    return "\n".join(lines)


def bytes_summary(plan: MemoryPlan, symbols: dict[str, int]) -> dict[str, int]:
    """For the values the plan places in buffers: ``unplanned`` (one allocation each, as code without a plan
    makes), ``pooled`` (the plan's buffers, what stays allocated) and ``peak`` (the most of those live at once)."""
    planned = [step for step in plan.steps if buffer_holding(plan, step.key) is not None]
    return {"unplanned": sum(type_bytes(step.type, symbols) for step in planned),
            "pooled": sum(type_bytes(t, symbols) for t in plan.buffers), "peak": peak_bytes(plan, symbols)}


def buffer_holding(plan: MemoryPlan, key: Key) -> int | None:
    """The planned buffer ``key`` lives in: its own, or its concat's (a ``Region``); None if it has none."""
    region = plan.region_of.get(key)
    return plan.buffer_of.get(key if region is None else region.concat)


def peak_bytes(plan: MemoryPlan, symbols: dict[str, int]) -> int:
    """The most bytes of planned buffers live at once."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index, step in enumerate(plan.steps):
        buffer = buffer_holding(plan, step.key)
        if buffer is not None:
            first.setdefault(buffer, index)
            last[buffer] = max(last.get(buffer, index), plan.last_use[step.key])
    return max((sum(type_bytes(plan.buffers[b], symbols) for b in first if first[b] <= i <= last[b])
                for i in range(len(plan.steps))), default=0)


def _key_names(plan: MemoryPlan) -> dict[Key, str]:
    """``%hint`` for keys with a name, ``<op #step>`` for the rest (sub-ops of fused ops)."""
    names: dict[Key, str] = {}
    for value, key in plan.key_of.items():
        if value.name_hint and key not in names:
            names[key] = f"%{value.name_hint}"
    for index, step in enumerate(plan.steps):
        names.setdefault(step.key, f"<{step.op_name} #{index}>")
    return names
