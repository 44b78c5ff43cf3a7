"""MPI worker: data parallel on the CuPy backend and the pipeline, over NCCL (fake_nccl.py's stand-ins for CuPy
and NCCL), and data parallel on CuPy over MPI; saves each rank's parameters and losses, and what reached NCCL."""

import json
import sys

import numpy as np

import fake_nccl

cupy = fake_nccl.install()

import kiln  # noqa: E402
import kiln.distributed as dist  # noqa: E402
import kiln.nn.functional as F  # noqa: E402

from dist_models import BATCH, STEPS, dataset, make_model, make_optimizer  # noqa: E402

out = sys.argv[1]
nccl, mpi = dist.init("nccl"), dist.MPICommunicator()
operands: dict[str, set] = {"cupy": set(), "numpy": set()}  # backend -> the array types its allreduces passed NCCL
allreduce = nccl.allreduce
nccl.allreduce = lambda x, op: operands[backend].add(type(x).__name__) or allreduce(x, op)
x, y = dataset(dtype="float64")
half = BATCH // nccl.size
shard = slice(nccl.rank * half, (nccl.rank + 1) * half)
# NCCL under the NumPy backend: results come back to the host; MPI under the CuPy backend: operands go to the host
for name, backend, comm in (("sgd", "cupy", nccl), ("adam", "cupy", nccl), ("sgd", "numpy", nccl), ("adam", "cupy", mpi)):
    dist.use(comm)
    model = make_model(seed=comm.rank, dtype="float64")
    step = dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, make_optimizer(name, model), backend=backend))
    losses = [float(step(x[k * BATCH :][shard], y[k * BATCH :][shard])) for k in range(STEPS)]
    transport = "nccl" if comm is nccl else "mpi"
    np.savez(f"{out}/dp_{name}_{backend}_{transport}_rank{comm.rank}.npz", losses=np.array(losses), **model.state_dict())

dist.use(nccl)
for name in ("sgd", "adam"):
    model = make_model(seed=7 * nccl.rank, dtype="float64")
    pipe = dist.PipelineParallel(model, F.cross_entropy, make_optimizer(name, model), stages=2, micro_batches=4)
    losses = [pipe(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]) for k in range(STEPS)]
    local = {n: p.data for n, p in model.named_parameters() if any(p is q for q in pipe.local)}
    np.savez(f"{out}/pp_{name}_rank{nccl.rank}.npz", losses=np.array(losses), **local)
with open(f"{out}/calls_rank{nccl.rank}.json", "w") as file:
    json.dump({"nccl": dict(fake_nccl.CALLS), "allreduce_operands": {k: sorted(v) for k, v in operands.items()}}, file)
