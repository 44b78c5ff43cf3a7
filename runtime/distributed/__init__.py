"""Distributed training on MPI (mpi4py) and NCCL (CuPy): data and pipeline parallelism compiled into the step.

```python
# mpiexec -n 2 python -m mpi4py train.py      (-m mpi4py: one failing rank aborts them all)
import kiln.distributed as dist

comm = dist.init()                                   # MPI.COMM_WORLD; mpi4py is imported only now
step = dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, opt))
loader = DataLoader(dataset, batch_size=512, rank=comm.rank, world_size=comm.size)
for xb, yb in loader:
    loss = step(xb, yb)                              # gradients averaged in buckets; same params on every rank
step.save("run.npz")                                 # rank 0 writes

pipe = dist.PipelineParallel(model, F.cross_entropy, opt, stages=2, micro_batches=4)
loss = pipe(x, y)                                    # each rank runs and holds only its stage
pipe.save("pipe.npz")                                # every rank calls it: rank 0 gathers the stages, writes one file
pipe.load("pipe.npz")                                # resumes exactly; TrainStep.load reads the same file

fc1, fc2 = dist.ColumnParallelLinear(784, 128), dist.RowParallelLinear(128, 10)   # tensor parallel layers

dist.init_process_group("mpi")                       # PyTorch's names: get_rank, all_reduce, barrier...
ddp = dist.DistributedDataParallel(model)            # an eager loop's loss.backward() averages .grad over the ranks
```

The compiler does the work: ``data-parallel`` inserts bucketed
``comm.allreduce`` ops on the gradients, ``pipeline-split`` keeps one stage of
the step with ``comm.send``/``comm.recv`` at its borders; the ``comm`` ops'
kernels call the communicator ``init`` made current. Under ``DataParallel``,
BatchNorm is traced with the global batch's statistics (``SyncBatchNorm``,
``frontend/sync_batch_norm.py``).
"""

from kiln.runtime.distributed.communicator import (
    Communicator, DistributedError, MPICommunicator, NCCLCommunicator, broadcast_arrays, current, init, is_available, is_initialized,
    shutdown, use,
)
from kiln.runtime.distributed.data_parallel import DataParallel
from kiln.runtime.distributed.eager_ddp import DistributedDataParallel
from kiln.runtime.distributed.pipeline_parallel import PipelineParallel
from kiln.runtime.distributed.tensor_parallel import ColumnParallelLinear, RowParallelLinear
from kiln.runtime.distributed.torch_api import (ReduceOp, all_reduce, barrier, broadcast, destroy_process_group, get_rank,
                                               get_world_size, init_process_group)

__all__ = [
    "ColumnParallelLinear", "RowParallelLinear", "Communicator", "DataParallel", "DistributedError", "MPICommunicator", "NCCLCommunicator", "PipelineParallel", "broadcast_arrays",
    "current", "init", "is_available", "is_initialized", "shutdown", "use",
]
__all__ += ["DistributedDataParallel", "ReduceOp", "all_reduce", "barrier", "broadcast", "destroy_process_group", "get_rank",
            "get_world_size", "init_process_group"]
