"""data-parallel: average the gradients over ranks, in flat buckets, before the optimizer reads them.

Each rank runs the same step on its shard of the batch; the mean of the
ranks' mean-loss gradients is the full batch's gradient when the shards are
equally large. Gradients are flattened and concatenated into buckets of at
most ``bucket_bytes`` (one ``comm.allreduce`` per bucket, not per tensor, as
PyTorch DDP does), then sliced and reshaped back. With ``average_loss`` the
loss joins the last bucket, so every rank reports the global loss.

```
%fc.weight.grad = "tensor.matmul"(...)      %fc.weight.grad = "tensor.matmul"(...)
%fc.bias.grad = "tensor.reduce_sum"(...)    %fc.bias.grad = "tensor.reduce_sum"(...)
%new = "optim.sgd_update"(%fc.weight,       %0 = "tensor.reshape"(%fc.weight.grad) {shape = [640]}
        %fc.weight.grad, %lr)          ->   %1 = "tensor.reshape"(%fc.bias.grad) {shape = [10]}
                                            %2 = "tensor.concat"(%0, %1) {axis = 0}
                                            %bucket0 = "comm.allreduce"(%2) {op = "mean", world_size = 2}
                                            %3 = "tensor.slice"(%bucket0) {axis = 0, start = 0, stop = 640, step = 1}
                                            %4 = "tensor.reshape"(%3) {shape = [10, 64]}
                                            ...
                                            %new = "optim.sgd_update"(%fc.weight, %4, %lr)
```

BatchNorm is not this pass's work: its statistics must be global already in
the forward pass, so ``DataParallel`` traces it with ``comm`` sums over the
ranks (``frontend/sync_batch_norm.py``). A training-mode ``nn.batch_norm``
left in the graph would normalize with one shard's statistics; the pass
refuses it unless ``local-batch-norm=true``.

The gradients are those the step-graph builder records on ``graph.gradients``;
a graph without that record (one parsed from text) uses the gradient operand
(the second) of every ``optim.*_update`` op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import TensorType
from kiln.compiler.passes.manager import Pass, register_pass


@register_pass
@dataclass(frozen=True)
class DataParallel(Pass):
    name = "data-parallel"
    world_size: int = 2
    """The number of ranks the step is compiled for (the runtime checks it against the communicator)."""
    bucket_bytes: int = 25 * 2**20
    """The most bytes one allreduce carries (PyTorch DDP's default, 25 MiB); a larger tensor gets a bucket alone."""
    average_loss: bool = True
    """Average the loss (the first output) too, in the last bucket."""
    local_batch_norm: bool = False
    """Accept ``nn.batch_norm`` ops, whose statistics are those of this rank's shard (running statistics then differ
    between ranks). Off: such a graph is refused; ``DataParallel`` traces BatchNorm over the global batch instead."""

    def run(self, graph: Graph) -> bool:
        if self.world_size < 1:
            raise KilnError(f"data-parallel: world_size must be >= 1, got {self.world_size}")
        gradients = _unique(gradient_values(graph))
        if not gradients or self.world_size == 1:
            return False
        if not self.local_batch_norm:
            _refuse_local_batch_norm(graph, self.world_size)
        extra = [graph.outputs[0]] if self.average_loss and graph.outputs and graph.outputs[0].type.shape == () else []
        first = _first_reader(graph, gradients)
        earlier = {id(op) for op in graph.ops[: graph.ops.index(first) if first is not None else len(graph.ops)]}
        builder = Builder(graph, insert_before=first, location="data-parallel")
        for index, bucket in enumerate(plan_buckets(gradients + extra, self.bucket_bytes)):
            self._allreduce_bucket(builder, graph, bucket, f"bucket{index}", earlier)
        return True

    def _allreduce_bucket(self, builder: Builder, graph: Graph, bucket: list[Value], name: str, earlier: set[int]) -> None:
        flat = [builder.reshape(value, shape=(_elements(value.type),)) for value in bucket]
        joined = flat[0] if len(flat) == 1 else builder.concat(*flat, axis=0)
        reduced = builder.op("comm.allreduce", joined, op="mean", world_size=self.world_size, name_hint=name)
        start = 0
        for value in bucket:
            whole = len(bucket) == 1
            part = reduced if whole else builder.slice(reduced, axis=0, start=start, stop=start + _elements(value.type), step=1)
            averaged = builder.reshape(part, shape=value.type.shape)
            averaged.name_hint = value.name_hint and f"{value.name_hint}.mean"
            start += _elements(value.type)
            _redirect(graph, value, averaged, skip=earlier | {id(v.producer) for v in flat})


def gradient_values(graph: Graph) -> list[Value]:
    """The recorded raw gradients, or the gradient operand of each optimizer update."""
    recorded = getattr(graph, "gradients", None)
    if recorded is not None:
        present = {id(op) for op in graph.ops}
        if any(v.producer is not None and id(v.producer) not in present for v in recorded):
            raise KilnError("data-parallel: a recorded gradient was rewritten by an earlier pass; put data-parallel first in the pipeline")
        return list(recorded)
    return [op.operands[1] for op in graph.ops if op.name.startswith("optim.") and op.name.endswith("_update")]


def plan_buckets(values: list[Value], bucket_bytes: int) -> list[list[Value]]:
    """Consecutive values of one dtype, each bucket at most ``bucket_bytes`` (a larger value alone)."""
    buckets: list[list[Value]] = []
    size = 0
    for value in values:
        nbytes = _static_bytes(value.type)
        fits = buckets and buckets[-1][0].type.dtype == value.type.dtype and size + nbytes <= bucket_bytes
        if fits:
            buckets[-1].append(value)
            size += nbytes
        else:
            buckets.append([value])
            size = nbytes
    return buckets


def _static_bytes(type: TensorType) -> int:
    if type.symbols:
        raise KilnError(f"data-parallel: a gradient of symbolic shape {type} cannot join a flat bucket; gradients have their parameter's static shape")
    return _elements(type) * type.dtype.numpy.itemsize


def _elements(type: TensorType) -> int:
    return math.prod(type.shape)  # type: ignore[arg-type]  (gradients are static)


def _unique(values: list[Value]) -> list[Value]:
    seen: dict[int, Value] = {}
    for value in values:
        seen.setdefault(id(value), value)
    return list(seen.values())


def _first_reader(graph: Graph, values: list[Value]) -> Op | None:
    """The first op reading any of ``values``; every one of them must be computed before it."""
    positions = {id(op): index for index, op in enumerate(graph.ops)}
    readers = [op for value in values for op, _ in value.uses]
    first = min(readers, key=lambda op: positions[id(op)], default=None)
    last_producer = max((positions[id(v.producer)] for v in values if v.producer is not None), default=-1)
    if first is not None and positions[id(first)] <= last_producer:
        raise KilnError(
            f"data-parallel: {first.name} (op #{positions[id(first)]} in @{graph.name}) reads a gradient before the last gradient "
            "is computed; run data-parallel on the step graph as built, before passes that reorder it"
        )
    return first


def _refuse_local_batch_norm(graph: Graph, world_size: int) -> None:
    """A training-mode ``nn.batch_norm`` sees one shard: its statistics (and the running ones) would differ per rank."""
    for index, op in enumerate(graph.ops):
        if op.name == "nn.batch_norm":
            where = f" from {op.location}" if op.location else ""
            raise KilnError(
                f"data-parallel: nn.batch_norm (op #{index} in @{graph.name}{where}) normalizes with the statistics of this rank's "
                "shard only, so each rank would train differently and the running statistics would drift apart; wrap the step in "
                f"kiln.distributed.DataParallel (it traces BatchNorm over the global batch), or build the step graph with "
                f"data_parallel_ranks={world_size}, or pass local-batch-norm=true to accept per-rank statistics"
            )


def _redirect(graph: Graph, old: Value, new: Value, skip: set[int]) -> None:
    """Readers of ``old`` after the buckets (not the ops in ``skip``) and the graph outputs read ``new`` instead."""
    for op, index in list(old.uses):
        if id(op) not in skip:
            op.set_operand(index, new)
    graph.outputs = [new if value is old else value for value in graph.outputs]
