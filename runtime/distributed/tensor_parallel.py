"""Tensor parallelism: Linear layers split across ranks (Megatron-LM), with the matching collectives in the graph.

```python
fc1 = ColumnParallelLinear(784, 128)   # rank r holds output rows r*128/W..; y_r = x W_r^T + b_r (a feature shard)
fc2 = RowParallelLinear(128, 10)       # rank r holds input columns; z = allreduce_sum(y_r W_r^T) + b
logits = fc2(F.relu(fc1(x)))           # every rank sees the whole batch and computes the same loss
```

A column-split layer starts with ``comm.replicate`` (identity forward; its
VJP sums the input's cotangent over ranks); a row-split layer ends with
``comm.allreduce`` (sum forward; identity VJP for the replicated loss), so a
column layer followed by a row layer costs one allreduce each way. Both draw
the full layer's initial weights (the same numbers ``nn.Linear`` draws) and
keep their shard, so a split model starts exactly where the unsplit one does.

Checkpoints hold the unsplit model. Both layers derive from
``TensorParallelModule``, which names the axis each parameter is split along
(``shard_axes``) and the communicator it is split over; a plain ``TrainStep``
whose model holds such layers is a distributed step for ``kiln.fit``
(``tensor_parallel_comm`` finds the communicator). ``gather_training_state``
joins every rank's shards (and the optimizer state, which has its parameter's
shape) into the unsplit arrays on rank 0, so rank 0 writes one file in
``TrainStep.save``'s format that the unsplit model (``nn.Linear`` in place of
each split layer, same names) loads and a deployment or export reads as it
is; ``local_training_state`` cuts such a tree back into this rank's shards on
resume, on any number of ranks the layers split into. ``step.save(path)`` and
``step.load(path)`` of such a step do the same for one file (``save_unsplit``,
``load_unsplit``; every rank calls them). Shard files per rank
would avoid the gather, but then no one file holds the model and a resume
needs the same number of ranks; the price of one file is that rank 0 holds
the whole training state while it writes (a model too large for one host
would need per-rank files).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.module import Module, Parameter
from kiln.frontend.tensor import Tensor, apply
from kiln.runtime import checkpoint
from kiln.runtime.distributed.communicator import Communicator, DistributedError, current, on_rank0
from kiln.runtime.distributed.pipeline_checkpoint import load_on_rank0, move_to_rank0

if TYPE_CHECKING:
    from kiln.runtime.train_step import TrainStep


def shard(array: np.ndarray, axis: int, rank: int, size: int) -> np.ndarray:
    """Rank ``rank``'s equal block of ``array`` along ``axis`` (a copy), of an array or a tensor (``kiln.load``'s)."""
    array = np.asarray(array)
    if array.shape[axis] % size:
        raise DistributedError(f"a dim of {array.shape[axis]} features does not split into {size} equal shards; use a multiple of {size}")
    block = array.shape[axis] // size
    return np.take(array, range(rank * block, (rank + 1) * block), axis=axis).copy()


class TensorParallelModule(Module):
    """A layer whose parameters are split across the ranks of ``comm``: the marker ``kiln.fit`` and its checkpoints look for."""

    shard_axes: ClassVar[Mapping[str, int]] = {}
    """Each split parameter and the axis it is split along (equal blocks in rank order); the other parameters are whole
    and identical on every rank."""

    def __init__(self, comm: Communicator | None):
        super().__init__()
        self.comm = comm or current()
        self.world_size = self.comm.size


class ColumnParallelLinear(TensorParallelModule):
    """``y_r = x W_r^T + b_r``: this rank's block of the output features (``weight`` rows and ``bias`` split)."""

    shard_axes = {"weight": 0, "bias": 0}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: str = "float32", comm: Communicator | None = None):
        super().__init__(comm)
        rank, size = self.comm.rank, self.comm.size
        self.weight = Parameter(shard(init.linear_weight(out_features, in_features, dtype), 0, rank, size))
        self.bias = Parameter(shard(init.linear_bias(out_features, in_features, dtype), 0, rank, size)) if bias else None

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(apply("comm.replicate", input, world_size=self.world_size), self.weight, self.bias)


class RowParallelLinear(TensorParallelModule):
    """``z = sum_r x_r W_r^T + b``: input features split (``weight`` columns), output summed over ranks, ``bias`` whole."""

    shard_axes = {"weight": 1}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: str = "float32", comm: Communicator | None = None):
        super().__init__(comm)
        self.weight = Parameter(shard(init.linear_weight(out_features, in_features, dtype), 1, self.comm.rank, self.comm.size))
        self.bias = Parameter(init.linear_bias(out_features, in_features, dtype)) if bias else None

    def forward(self, input: Tensor) -> Tensor:
        partial = input @ self.weight.T
        total = apply("comm.allreduce", partial, op="sum", world_size=self.world_size)
        return total if self.bias is None else total + self.bias


# --- the model's communicator and its unsplit state --------------------------------------------------


def tensor_parallel_comm(model: Any) -> Communicator | None:
    """The communicator the tensor-parallel layers of ``model`` are split over; None when it has none.

    Raises ``DistributedError`` when two of its layers were built with different communicators (one model, one split).
    """
    layers = _tensor_parallel_layers(model)
    if not layers:
        return None
    first, comm = layers[0][0], layers[0][1].comm
    others = [name for name, layer in layers if layer.comm is not comm]
    if others:
        raise DistributedError(
            f"the tensor-parallel layers of {type(model).__name__} are split over different communicators ({first!r} and "
            f"{', '.join(map(repr, others))}); build them all with the same comm= (by default the one kiln.distributed.init made)"
        )
    return comm


def split_entries(model: Module) -> dict[str, int]:
    """``model.state_dict()`` name -> the axis it is split along, for every split parameter of a tensor-parallel layer."""
    return {
        f"{prefix}.{name}" if prefix else name: axis
        for prefix, layer in _tensor_parallel_layers(model)
        for name, axis in layer.shard_axes.items()
        if getattr(layer, name, None) is not None
    }


def gather_training_state(state: Mapping[str, Any], model: Module, comm: Communicator) -> dict[str, Any] | None:
    """``state`` (this rank's ``TrainStep.state_dict()``) with every shard joined into the unsplit array, on rank 0;
    None on the other ranks. Every rank must call it, in the same order: each sends its shards to rank 0."""
    axes = split_entries(model)
    model_state = {name: _gathered(comm, array, axes.get(name)) for name, array in state["model"].items()}
    optimizer_state = {
        name: {key: _gathered(comm, array, axes.get(name)) for key, array in arrays.items()}
        for name, arrays in state["optimizer"]["state"].items()
    }
    if comm.rank != 0:
        return None
    return {"model": model_state, "optimizer": {**state["optimizer"], "state": optimizer_state}}


def local_training_state(state: Mapping[str, Any], model: Module, comm: Communicator) -> dict[str, Any]:
    """An unsplit ``TrainStep.state_dict()`` tree (``gather_training_state``'s) cut into this rank's shards."""
    axes = split_entries(model)

    def local(name: str, array: Any) -> Any:
        return array if name not in axes else shard(np.asarray(array), axes[name], comm.rank, comm.size)

    optimizer = state["optimizer"]
    return {
        **state,
        "model": {name: local(name, array) for name, array in state["model"].items()},
        "optimizer": {**optimizer, "state": {name: {key: local(name, a) for key, a in arrays.items()} for name, arrays in optimizer["state"].items()}},
    }


def save_unsplit(step: "TrainStep", path: str | os.PathLike, comm: Communicator) -> None:
    """``step.save(path)`` of a model with tensor-parallel layers: every rank sends its shards to rank 0, which writes
    the joined state atomically (the file the unsplit model's step writes); every rank raises if that write failed."""
    state = gather_training_state(step.state_dict(), step.model, comm)
    on_rank0(comm, lambda: checkpoint.save(path, state), f"write {os.fspath(path)}")


def load_unsplit(step: "TrainStep", path: str | os.PathLike, comm: Communicator) -> None:
    """``step.load(path)`` of a model with tensor-parallel layers: rank 0 reads the unsplit file and broadcasts it (the
    other ranks need not see it), and every rank loads its shards of it. Every rank calls it and checks alike."""
    step.load_state_dict(local_training_state(load_on_rank0(comm, path), step.model, comm))


def _tensor_parallel_layers(model: Any) -> list[tuple[str, TensorParallelModule]]:
    if not isinstance(model, Module):
        return []
    return [(name, layer) for name, layer in model.named_modules() if isinstance(layer, TensorParallelModule)]


def _gathered(comm: Communicator, array: np.ndarray, axis: int | None) -> np.ndarray | None:
    """On rank 0 the unsplit array: its own block and every other rank's along ``axis`` (a whole array as it is)."""
    if axis is None:
        return array if comm.rank == 0 else None
    blocks = [move_to_rank0(comm, rank, lambda: array, array) for rank in range(comm.size)]  # equal blocks: shape of our own
    return np.concatenate(blocks, axis) if comm.rank == 0 else None
