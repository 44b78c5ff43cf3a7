"""``torch.distributed``'s process-group functions over kiln's communicator, so a PyTorch script's setup ports as is.

```python
import kiln.distributed as dist
dist.init_process_group("mpi")            # "gloo" and "nccl" name MPI and NCCL: kiln runs on MPI's launcher
rank, world = dist.get_rank(), dist.get_world_size()
dist.all_reduce(t, op=dist.ReduceOp.SUM)  # in place, on an eager tensor, a Parameter or a NumPy array
dist.broadcast(t, src=0)
dist.barrier()
dist.destroy_process_group()
```

Launch with ``mpiexec -n N python -m mpi4py script.py`` (not torchrun: kiln's
processes find each other through MPI, so ``MASTER_ADDR``, ``init_method`` and
``rank=``/``world_size=`` arguments are checked against MPI's, never used).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.runtime.distributed.communicator import DistributedError, current, init, is_initialized, shutdown, to_host


class ReduceOp:
    """``torch.distributed.ReduceOp``'s reductions kiln's communicators implement."""

    SUM, AVG, MAX, MIN = "sum", "mean", "max", "min"


_BACKENDS = {"mpi": "mpi", "gloo": "mpi", "nccl": "nccl", None: "mpi"}


def init_process_group(backend: str | None = None, init_method: str | None = None, timeout: Any = None,
                       world_size: int = -1, rank: int = -1, **options: Any) -> None:
    """Start distributed mode on MPI (``"gloo"`` and ``"mpi"``) or NCCL; ``rank``/``world_size``, if given, must be
    MPI's."""
    if backend not in _BACKENDS:
        raise DistributedError(f"init_process_group: unknown backend {backend!r}; use 'mpi', 'gloo' or 'nccl'")
    communicator = init(_BACKENDS[backend])
    for name, given, actual in (("rank", rank, communicator.rank), ("world_size", world_size, communicator.size)):
        if given not in (-1, actual):
            raise DistributedError(f"init_process_group({name}={given}): MPI started this process as {name} {actual}; "
                                   "launch with mpiexec -n N python -m mpi4py script.py and leave rank/world_size out")


def destroy_process_group(group: Any = None) -> None:
    shutdown()


def get_rank(group: Any = None) -> int:
    return current().rank


def get_world_size(group: Any = None) -> int:
    return current().size


def barrier(group: Any = None, **options: Any) -> None:
    current().barrier()


def all_reduce(tensor: Any, op: str = ReduceOp.SUM, group: Any = None, async_op: bool = False) -> None:
    """Reduce ``tensor`` over the ranks, in place (an eager tensor's, a Parameter's or a NumPy array's values)."""
    if op not in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN):
        raise DistributedError(f"all_reduce: op {op!r} is not one of kiln's (SUM, AVG, MAX, MIN)")
    array = _array_of(tensor, "all_reduce")
    np.copyto(array, to_host(current().allreduce(array, op)))


def broadcast(tensor: Any, src: int, group: Any = None, async_op: bool = False) -> None:
    """Overwrite ``tensor``'s values, in place, with rank ``src``'s."""
    array = _array_of(tensor, "broadcast")
    np.copyto(array, to_host(current().broadcast(array, src)))


def _array_of(tensor: Any, who: str) -> np.ndarray:
    """The array holding ``tensor``'s values (written in place)."""
    from kiln.frontend.eager_values import eager_array
    from kiln.frontend.module import ArrayLeaf

    if isinstance(tensor, np.ndarray):  # a NumPy array, p.grad or p.data (a TorchArray)
        return tensor
    array = tensor.data if isinstance(tensor, ArrayLeaf) else eager_array(tensor)
    if not isinstance(array, np.ndarray):
        raise DistributedError(f"{who}: needs an eager tensor, a Parameter or a NumPy array, got {type(tensor).__name__}")
    return array


__all__ = ["ReduceOp", "all_reduce", "barrier", "broadcast", "destroy_process_group", "get_rank", "get_world_size",
           "init_process_group", "is_initialized"]
