"""plan-memory never lets two live values share storage, checked by an independent liveness computation."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kiln_random_graphs import FULL_PIPELINE, random_graph

from kiln.backends.numpy.codegen import numpy_policy
from kiln.compiler.ir.parser import parse
from kiln.compiler.passes.manager import PassManager
from kiln.compiler.passes.plan_memory import DEFAULT_POLICY, MemoryPlan, plan_memory


def holders(plan: MemoryPlan) -> dict[object, set[object]]:
    """For each storage, every key that may point into it: itself and opaque results derived from it (transitively)."""
    held: dict[object, set[object]] = {key: {key} for key in plan.inputs}
    for step in plan.steps:
        held.setdefault(step.key, {step.key})
        if step.kind == "opaque":
            for operand in step.operands:
                for storage, keys in held.items():
                    if operand in keys:
                        keys.add(step.key)
    return held


def live_until(plan: MemoryPlan, keys: set[object], outputs: set[object]) -> int:
    """The last step reading any of ``keys``; past the end when one of them is returned."""
    if keys & outputs:
        return len(plan.steps)
    reads = [index for index, step in enumerate(plan.steps) if keys & set(step.operands)]
    return max(reads, default=-1)


def check_plan(plan: MemoryPlan, outputs: list[object]) -> None:
    held = holders(plan)
    returned = set(outputs)
    defined = {step.key: index for index, step in enumerate(plan.steps)}
    by_buffer: dict[int, list[object]] = {}
    for key, buffer in plan.buffer_of.items():
        assert plan.buffers[buffer] == plan.step_by_key[key].type, "a buffer holds a value of another type"
        assert not held[key] & returned, "a pooled buffer reaches a graph output"
        by_buffer.setdefault(buffer, []).append(key)
    for keys in by_buffer.values():
        keys.sort(key=defined.__getitem__)
        for earlier, later in zip(keys, keys[1:]):
            end, start = live_until(plan, held[earlier], returned), defined[later]
            assert end <= start, f"two live values share a buffer: {earlier} (live to {end}) and {later} (from {start})"
            if end == start:
                _check_in_place(plan.steps[start], earlier, held[earlier])
    for key, source in plan.donated.items():
        storage = plan.inputs[source]
        end = live_until(plan, held[storage], returned)
        assert end <= defined[key], "a donated input is overwritten while still read"
        if end == defined[key]:
            _check_in_place(plan.steps[defined[key]], storage, held[storage])


def _check_in_place(step, storage, aliases) -> None:
    """The step reading ``storage`` while writing it must be elementwise and read it only as itself."""
    assert step.in_place, f"{step.op_name} writes the storage it reads but is not elementwise"
    for operand in step.operands:
        if operand in aliases:
            assert operand == storage, f"{step.op_name} reads a view of the storage it overwrites"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_graphs_never_alias_live_buffers(data: st.DataObject):
    graph = random_graph(data)
    PassManager(FULL_PIPELINE).run(graph)
    outputs_count = len(graph.outputs)
    donations = {i: data.draw(st.integers(0, outputs_count - 1)) for i in range(len(graph.inputs)) if data.draw(st.booleans())}
    for policy in (DEFAULT_POLICY, numpy_policy()):
        plan = plan_memory(graph, policy, donations)
        check_plan(plan, [plan.key_of[v] for v in graph.outputs])


def test_a_chain_reuses_one_buffer_and_a_view_keeps_its_source_alive():
    graph = parse(
        """func @f(%x: tensor<4x4xf32>) {
  %a = "tensor.exp"(%x) : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %t = "tensor.transpose"(%a) {perm = [1, 0]} : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %b = "tensor.neg"(%x) : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %c = "tensor.add"(%b, %t) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %d = "tensor.tanh"(%c) : (tensor<4x4xf32>) -> tensor<4x4xf32>
  return %d : tensor<4x4xf32>
}"""
    )
    plan = plan_memory(graph, numpy_policy())
    check_plan(plan, [plan.key_of[v] for v in graph.outputs])
    names = {key.name_hint: buffer for key, buffer in plan.buffer_of.items()}
    assert names["a"] != names["b"], "%a is still read (through the view %t) when %b is written"
    assert names["c"] == names["b"], "%c reuses the dying %b in place"
