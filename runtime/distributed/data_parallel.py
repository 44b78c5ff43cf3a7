"""``DataParallel``: a compiled training step run by every rank on its shard of each batch.

```python
step = DataParallel(kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Adam(model.parameters())))
loss = step(x_shard, y_shard)    # the global mean loss; parameters stay identical on every rank
```

Wrapping prepends ``data-parallel{world-size=W ...}`` to the step's pass
pipeline (the gradients are averaged in flat buckets inside the graph, see
``compiler/passes/data_parallel.py``) and broadcasts rank 0's parameters and
buffers, so every rank starts alike. Shards must be equally long (the
``DataLoader``'s ``rank``/``world_size`` sharding makes them so). Only rank 0
writes checkpoints.

BatchNorm has ``SyncBatchNorm`` semantics: the step is traced with
``data_parallel_ranks=W``, so in training mode every BatchNorm normalizes with
the mean and variance of the global batch (all ranks' shards, two small
``comm.allreduce`` ops per layer forward and two back, see
``frontend/sync_batch_norm.py``) and updates ``running_mean``/``running_var``
from them. W ranks with shards of a batch then take exactly the step one
process takes with the whole batch, parameters and running statistics alike,
and the running statistics stay identical on every rank.
"""

from __future__ import annotations

from typing import Any

from kiln.runtime.distributed.communicator import Communicator, DistributedError, broadcast_arrays, current, on_rank0, using
from kiln.runtime.distributed.pipeline_checkpoint import load_on_rank0
from kiln.runtime.distributed.tensor_parallel import tensor_parallel_comm
from kiln.runtime.train_step import TrainStep


class DataParallel:
    """Wraps a ``TrainStep`` that has not run yet; calls, ``graph``, ``state_dict`` and the rest go to it
    (attributes set on the wrapper, such as ``loss_scale``, are set on the step)."""

    replicated = True
    """Every rank holds the whole, identical state: rank 0 alone writes checkpoints (``save``, ``kiln.fit``'s)."""

    def __init__(self, step: TrainStep, comm: Communicator | None = None, bucket_bytes: int = 25 * 2**20, average_loss: bool = True):
        if step.compiled:
            raise DistributedError("DataParallel must wrap a training step before its first call (it changes how the step compiles)")
        if tensor_parallel_comm(step.model) is not None:
            raise DistributedError(
                "DataParallel cannot wrap a model with tensor-parallel layers (ColumnParallelLinear, RowParallelLinear): both "
                "would split over the same ranks; train it as a plain step, whose layers already communicate"
            )
        self.step = step
        self.comm = comm or current()
        options = f"world-size={self.comm.size} bucket-bytes={bucket_bytes} average-loss={'true' if average_loss else 'false'}"
        step.pipeline = f"data-parallel{{{options}}}," + step.pipeline
        step.data_parallel_ranks = self.comm.size  # BatchNorm traces with the global batch's statistics (SyncBatchNorm)
        broadcast_arrays([array for _, array in step.model.state_dict().items()], root=0, comm=self.comm)

    def __call__(self, *batch: Any) -> float:
        with using(self.comm):  # the gradients' allreduce runs on this wrapper's communicator
            return self.step(*batch)

    def save(self, path: str) -> None:
        """Rank 0 writes the checkpoint (every rank holds the same state); the others wait for it, and raise too if it
        failed (no rank is left waiting)."""
        on_rank0(self.comm, lambda: self.step.save(path), f"write {path}")

    def load(self, path: str) -> None:
        """Every rank calls it: rank 0 reads the file and broadcasts it (the other ranks need not see it), every rank
        loads the same state."""
        self.step.load_state_dict(load_on_rank0(self.comm, path))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.step, name)

    def __setattr__(self, name: str, value: Any) -> None:
        """The wrapper's own ``step`` and ``comm``; anything else (``loss_scale``, ...) is the step's."""
        if name in ("step", "comm"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.step, name, value)
