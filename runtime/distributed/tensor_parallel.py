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
"""

from __future__ import annotations

import numpy as np

from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.module import Module, Parameter
from kiln.frontend.tensor import Tensor, apply
from kiln.runtime.distributed.communicator import Communicator, DistributedError, current


def shard(array: np.ndarray, axis: int, rank: int, size: int) -> np.ndarray:
    """Rank ``rank``'s equal block of ``array`` along ``axis`` (a copy)."""
    if array.shape[axis] % size:
        raise DistributedError(f"a dim of {array.shape[axis]} features does not split into {size} equal shards; use a multiple of {size}")
    block = array.shape[axis] // size
    return np.take(array, range(rank * block, (rank + 1) * block), axis=axis).copy()


class ColumnParallelLinear(Module):
    """``y_r = x W_r^T + b_r``: this rank's block of the output features (``weight`` rows and ``bias`` split)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: str = "float32", comm: Communicator | None = None):
        super().__init__()
        comm = comm or current()
        self.world_size = comm.size
        self.weight = Parameter(shard(init.linear_weight(out_features, in_features, dtype), 0, comm.rank, comm.size))
        self.bias = Parameter(shard(init.linear_bias(out_features, in_features, dtype), 0, comm.rank, comm.size)) if bias else None

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(apply("comm.replicate", input, world_size=self.world_size), self.weight, self.bias)


class RowParallelLinear(Module):
    """``z = sum_r x_r W_r^T + b``: input features split (``weight`` columns), output summed over ranks, ``bias`` whole."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: str = "float32", comm: Communicator | None = None):
        super().__init__()
        comm = comm or current()
        self.world_size = comm.size
        self.weight = Parameter(shard(init.linear_weight(out_features, in_features, dtype), 1, comm.rank, comm.size))
        self.bias = Parameter(init.linear_bias(out_features, in_features, dtype)) if bias else None

    def forward(self, input: Tensor) -> Tensor:
        partial = input @ self.weight.T
        total = apply("comm.allreduce", partial, op="sum", world_size=self.world_size)
        return total if self.bias is None else total + self.bias
