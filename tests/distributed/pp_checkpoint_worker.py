"""MPI worker: PipelineParallel save and load across two mpiexec runs, in float64 with 4 micro-batches.

``train OUT N M``: per optimizer, one pipeline trains N + M steps and saves (``{name}_full.npz``); another trains
N steps and saves (``{name}_after_n.npz``). ``resume OUT N M``: a fresh pipeline (other initial values) first tries a
missing file and a folder that does not exist (every rank must raise, none hang), then loads ``{name}_after_n.npz``,
trains steps N..N+M and saves (``{name}_resumed.npz``). Losses go to ``{name}_{mode}_losses_rank{r}.npy``.
"""

import sys

import numpy as np

import kiln.distributed as dist
import kiln.nn.functional as F

from dist_models import BATCH, dataset, make_model, make_optimizer

mode, out, n, m = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
comm = dist.init()
x, y = dataset(dtype="float64")


def pipeline(name: str, seed: int):
    model = make_model(seed, "float64")
    return dist.PipelineParallel(model, F.cross_entropy, make_optimizer(name, model), stages=2, micro_batches=4)


def train(pipe, steps: range) -> list[float]:
    return [pipe(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]) for k in steps]


def report_failure(what: str, action) -> None:
    try:
        action()
    except Exception as error:
        print(f"rank {comm.rank} {what}: {type(error).__name__}: {error}\n", end="", flush=True)
    else:
        print(f"rank {comm.rank} {what}: no error\n", end="", flush=True)


for name in ("sgd", "adam"):
    if mode == "train":
        full = pipeline(name, 0)
        losses = train(full, range(n + m))
        full.save(f"{out}/{name}_full.npz")
        first = pipeline(name, 0)
        train(first, range(n))
        first.save(f"{out}/{name}_after_n.npz")
    else:
        resumed = pipeline(name, 1 + comm.rank)  # other initial values on each rank: the load must replace all of them
        report_failure("load of a missing file", lambda: resumed.load(f"{out}/missing.npz"))
        resumed.load(f"{out}/{name}_after_n.npz")
        losses = train(resumed, range(n, n + m))
        print(f"rank {comm.rank} {name}: optimizer state for {len(resumed.optimizer.state)} of 8 parameters\n", end="", flush=True)
        report_failure("save into a missing folder", lambda: resumed.save(f"{out}/no/such/folder/run.npz"))
        resumed.save(f"{out}/{name}_resumed.npz")
    np.save(f"{out}/{name}_{mode}_losses_rank{comm.rank}.npy", np.array(losses))
