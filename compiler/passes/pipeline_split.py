"""pipeline-split: keep one pipeline stage of a training-step graph, with sends and receives at its borders.

The trained parameters are grouped into layers by name (``fc1.weight`` and
``fc1.bias`` are layer ``fc1``), in the order the forward pass first reads
them, and consecutive layers form ``stages`` stages: at the user's ``cuts``
(the layers that begin stages 1, 2, ...) or balanced by estimated FLOPs (a
dense layer does one multiply and one add per weight and example, so a layer
costs 2 x its parameter count). Every op then gets a stage:

- a forward op (one the loss depends on) runs on the latest stage of its operands;
- any other op (backward, optimizer update) runs where all its operands already are,
  else on the earliest stage among them (gradients flow back towards stage 0);
- inputs other than parameters, constants and what depends only on them are free:
  every stage that needs them computes or reads them itself.

A value read on a stage it does not live on is sent there right before the
first reader (``comm.send`` on its stage, ``comm.recv`` on the reader's).
Each rank's graph keeps the joint graph's order, so every send meets its
receive in the same global sequence on both ranks and no schedule deadlocks.
With a step built for ``accumulate=k`` micro-batches this is GPipe's
schedule: stage 0 sends micro-batch 0's activations and goes on with
micro-batch 1 while stage 1 works on micro-batch 0, then gradients flow back.

```
// joint step (2 layers, 1 micro-batch)           // pipeline-split{stages=2 rank=0}
%h = relu(matmul(%x, transpose(%fc1.weight)))     %h = relu(matmul(%x, transpose(%fc1.weight)))
%logits = matmul(%h, transpose(%fc2.weight))      %h.sent = "comm.send"(%h) {peer = 1, tag = 0}
%loss = cross_entropy(%logits, %target)           %dh = "comm.recv"() {peer = 1, tag = 1, shape = ["N", 64], dtype = f32}
%dh = matmul(%dlogits, %fc2.weight) ...           %dfc1 = ... (%dh, %h) ...
%fc1.weight.new = sgd_update(%fc1.weight, ...)    %fc1.weight.new = sgd_update(%fc1.weight, ...)
%fc2.weight.new = sgd_update(%fc2.weight, ...)    return %fc1.weight.new
return %loss, %fc1.weight.new, %fc2.weight.new
```

The kept inputs and outputs are recorded as positions in the joint graph's
lists (``graph.stage_inputs``, ``graph.stage_outputs``) for the runtime that
feeds the stage; inputs with symbolic dims stay so the dims stay bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.passes.dce import DCE
from kiln.compiler.passes.manager import Pass, register_pass

FREE = -1
"""The stage of a value every stage can compute or read itself (batch inputs, constants, hyper-parameters)."""


@register_pass
@dataclass(frozen=True)
class PipelineSplit(Pass):
    name = "pipeline-split"
    stages: int = 2
    rank: int = 0
    """The stage this graph keeps (the MPI rank that runs it)."""
    cuts: tuple[str, ...] = ()
    """Layer names that begin stages 1.. (``cuts=fc3``); empty: balance by estimated FLOPs."""

    def run(self, graph: Graph) -> bool:
        if not 0 <= self.rank < self.stages:
            raise KilnError(f"pipeline-split: rank {self.rank} is outside 0..{self.stages - 1} (stages={self.stages})")
        layers = layer_order(graph)
        layer_stage = assign_layers(layers, self.stages, self.cuts)
        homes = {id(v): layer_stage[layer_of(v)] for layer in layers.values() for v in layer}
        original_inputs, original_outputs = list(graph.inputs), list(graph.outputs)
        stage_of = place_ops(graph, homes)
        _keep_stage(graph, stage_of, self.rank)
        graph.stage_outputs = [i for i, v in enumerate(original_outputs) if _home(v, homes, stage_of) in (self.rank, FREE)]
        graph.outputs = [original_outputs[i] for i in graph.stage_outputs]
        DCE().run(graph)
        graph.inputs = [v for v in original_inputs if v.uses or v in graph.outputs or v.type.symbols]
        graph.stage_inputs = [original_inputs.index(v) for v in graph.inputs]
        return True


# --- layers and their stages ---------------------------------------------------------------------


def trained_parameters(graph: Graph) -> list[Value]:
    """The parameter (first) operand of every optimizer update that is a graph input."""
    inputs = {id(v) for v in graph.inputs}
    found = [op.operands[0] for op in graph.ops if op.name.startswith("optim.") and op.name.endswith("_update")]
    return [v for v in found if id(v) in inputs]


def layer_of(value: Value) -> str:
    """``fc1.weight`` -> ``fc1``; a parameter named without a dot is its own layer."""
    return (value.name_hint or "?").rsplit(".", 1)[0]


def layer_order(graph: Graph) -> dict[str, list[Value]]:
    """Layer name -> its parameters, layers in the order the graph first reads them."""
    parameters = trained_parameters(graph)
    if not parameters:
        raise KilnError(f"pipeline-split: @{graph.name} has no optimizer updates (optim.* ops); split a training-step "
                        "graph. A step whose momentum a scheduler cycles (OneCycleLR/CyclicLR with cycle_momentum=True) "
                        "writes its updates out as plain ops, which this pass cannot place: pass cycle_momentum=False")
    positions = {id(op): index for index, op in enumerate(graph.ops)}
    first_read = lambda v: min((positions[id(op)] for op, _ in v.uses), default=len(positions))  # noqa: E731
    layers: dict[str, list[Value]] = {}
    for value in sorted(parameters, key=first_read):
        layers.setdefault(layer_of(value), []).append(value)
    return layers


def assign_layers(layers: dict[str, list[Value]], stages: int, cuts: tuple[str, ...]) -> dict[str, int]:
    """Layer -> stage: consecutive layers per stage, at ``cuts`` or balanced by cost."""
    names = list(layers)
    if len(names) < stages:
        raise KilnError(f"pipeline-split: {stages} stages need at least {stages} layers; the model has {len(names)} ({', '.join(names)})")
    starts = _cut_starts(names, stages, cuts) if cuts else balanced_starts([layer_cost(layers[n]) for n in names], stages)
    return {name: sum(index >= start for start in starts) - 1 for index, name in enumerate(names)}


def layer_cost(parameters: list[Value]) -> int:
    # forward FLOPs per example of a dense layer: one multiply and one add per weight
    return sum(2 * math.prod(d if isinstance(d, int) else 1 for d in v.type.shape) for v in parameters)


def _cut_starts(names: list[str], stages: int, cuts: tuple[str, ...]) -> list[int]:
    unknown = [cut for cut in cuts if cut not in names]
    if unknown or len(cuts) != stages - 1:
        raise KilnError(
            f"pipeline-split: cuts={','.join(cuts)} must name {stages - 1} layer(s) that begin stages 1..{stages - 1}; "
            f"the layers in order are {', '.join(names)}"
        )
    starts = [0] + sorted(names.index(cut) for cut in cuts)
    if len(set(starts)) != stages:
        raise KilnError(f"pipeline-split: cuts={','.join(cuts)} leave a stage without layers; the layers are {', '.join(names)}")
    return starts


def balanced_starts(costs: list[int], stages: int) -> list[int]:
    """The first layer of each stage, minimizing the largest stage's cost (linear partition, exact)."""
    count = len(costs)
    prefix = [0]
    for cost in costs:
        prefix.append(prefix[-1] + cost)
    best: dict[tuple[int, int], tuple[int, list[int]]] = {}

    def solve(start: int, parts: int) -> tuple[int, list[int]]:
        if parts == 1:
            return prefix[count] - prefix[start], [start]
        if (start, parts) not in best:
            options = []
            for end in range(start + 1, count - parts + 2):
                rest, starts = solve(end, parts - 1)
                options.append((max(prefix[end] - prefix[start], rest), [start] + starts))
            best[(start, parts)] = min(options, key=lambda option: option[0])
        return best[(start, parts)]

    return solve(0, stages)[1]


# --- placing ops and inserting transfers ----------------------------------------------------------


def forward_ops(graph: Graph) -> set[int]:
    """Ids of the ops the loss (the first output) depends on."""
    needed, forward = {id(graph.outputs[0])}, set()
    for op in reversed(graph.ops):
        if any(id(r) in needed for r in op.results):
            forward.add(id(op))
            needed.update(id(v) for v in op.operands)
    return forward


def place_ops(graph: Graph, homes: dict[int, int]) -> dict[int, int]:
    """Op id -> stage (or FREE); inserts a send/recv pair before each op that reads a value from another stage."""
    forward = forward_ops(graph)
    available: dict[int, set[int]] = {key: {stage} for key, stage in homes.items()}
    received: dict[tuple[int, int], Value] = {}
    stage_of: dict[int, int] = {}
    for op in list(graph.ops):
        stage = _choose_stage(op, available, id(op) in forward)
        stage_of[id(op)] = stage
        if stage != FREE:
            _bring_operands(graph, op, stage, available, received, stage_of)
        for result in op.results:
            available[id(result)] = {stage}
    return stage_of


def _choose_stage(op: Op, available: dict[int, set[int]], is_forward: bool) -> int:
    placed = [available[id(v)] for v in op.operands if available.get(id(v), {FREE}) != {FREE}]
    if not placed:
        return FREE
    homes = [min(stages) for stages in placed]  # a value's home is the first stage that has it
    if is_forward:
        return max(homes)  # run once everything it reads exists
    common = set.intersection(*placed)
    return max(common) if common else min(homes)


def _bring_operands(
    graph: Graph, op: Op, stage: int, available: dict[int, set[int]], received: dict[tuple[int, int], Value], stage_of: dict[int, int]
) -> None:
    for index, value in enumerate(op.operands):
        where = available.get(id(value), {FREE})
        key = (id(value), stage)
        if FREE in where:
            continue
        if stage not in where:
            received[key] = _transfer(graph, op, value, min(where), stage, len(received), stage_of)
            where.add(stage)  # now also here: later readers on this stage reuse the received copy
        if key in received:
            op.set_operand(index, received[key])


def _transfer(graph: Graph, before: Op, value: Value, source: int, target: int, tag: int, stage_of: dict[int, int]) -> Value:
    """``comm.send`` on ``source`` and the matching ``comm.recv`` on ``target``, both right before ``before``."""
    builder = Builder(graph, insert_before=before, location="pipeline-split")
    sent = builder.op("comm.send", value, peer=target, tag=tag)
    sent.name_hint = value.name_hint and f"{value.name_hint}.sent"
    got = builder.op("comm.recv", peer=source, tag=tag, shape=value.type.shape, dtype=value.type.dtype)
    got.name_hint = value.name_hint
    stage_of[id(sent.producer)], stage_of[id(got.producer)] = source, target
    return got


def _home(value: Value, homes: dict[int, int], stage_of: dict[int, int]) -> int:
    if value.producer is None:
        return homes.get(id(value), FREE)
    return stage_of[id(value.producer)]


def _keep_stage(graph: Graph, stage_of: dict[int, int], rank: int) -> None:
    """Drop the other stages' ops (their results are never read here: transfers replaced those reads)."""
    kept = [op for op in graph.ops if stage_of[id(op)] in (rank, FREE)]
    for op in graph.ops:
        if stage_of[id(op)] not in (rank, FREE):
            op.drop_operands()
    graph.ops = kept
