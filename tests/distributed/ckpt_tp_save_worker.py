"""MPI worker: ``step.save`` / ``step.load`` of a plain ``TrainStep`` whose model holds tensor-parallel layers.

``python -m mpi4py ckpt_tp_save_worker.py save OUT``: the worker's ``SplitMLP`` trains ``SAVE_AT`` steps and saves to
``OUT/step.npz`` (each rank also keeps its shards at that point in ``saved_rank{r}.npz``), then trains ``MORE`` steps
(``uninterrupted_rank{r}.npz``); then saves into ``OUT/a_file/step.npz``, where ``a_file`` is a file (rank 0 cannot
write: every rank must raise, none wait).
``... load OUT``: a new step (other initial values) loads a missing file (every rank must raise), then ``OUT/single.npz``
(written by a single-process step of the unsplit ``MLP2``; shards in ``from_single_rank{r}.npz``), then ``OUT/step.npz``
(rank 1 is given a path that does not exist: only rank 0 reads the file) and trains the same ``MORE`` steps
(``resumed_rank{r}.npz``).

Each rank writes ``{mode}_rank{r}.json``: the losses, the files ``kiln.runtime.checkpoint.save`` was asked to write on
it and the errors it raised. A shard file holds the rank's parameters (``{name}``), their optimizer state
(``{name}.{state name}``) and the update count (``step``).
"""

import json
import sys

import kiln.distributed as dist
from kiln.runtime import checkpoint

from dist_models import BATCH, dataset
from fit_checks import attempt
from tp_fit_worker import save_shards, tensor_parallel_step

SAVE_AT, MORE = 4, 3


def train(step, updates: range) -> list[float]:
    x, y = dataset()
    return [step(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]) for k in updates]


def main(mode: str, out: str) -> None:
    comm = dist.init()  # an error no attempt() expects ends the job on every rank
    report = {"losses": [], "writes": [], "errors": {}}
    save = checkpoint.save
    checkpoint.save = lambda path, tree: (report["writes"].append(str(path)), save(path, tree))[1]
    if mode == "save":
        step = tensor_parallel_step(seed=0)
        train(step, range(SAVE_AT))
        step.save(f"{out}/step.npz")
        save_shards(step, f"{out}/saved_rank{comm.rank}.npz")
        report["losses"] = train(step, range(SAVE_AT, SAVE_AT + MORE))
        save_shards(step, f"{out}/uninterrupted_rank{comm.rank}.npz")
        if comm.rank == 0:
            open(f"{out}/a_file", "w").close()
        comm.barrier()
        attempt(report, "unwritable", lambda: step.save(f"{out}/a_file/step.npz"))
    else:
        step = tensor_parallel_step(seed=5)  # other initial values: the load must replace them on every rank
        attempt(report, "missing", lambda: step.load(f"{out}/missing.npz"))
        step.load(f"{out}/single.npz")
        save_shards(step, f"{out}/from_single_rank{comm.rank}.npz")
        step.load(f"{out}/step.npz" if comm.rank == 0 else f"{out}/not_on_rank1/step.npz")
        report["losses"] = train(step, range(SAVE_AT, SAVE_AT + MORE))
        save_shards(step, f"{out}/resumed_rank{comm.rank}.npz")
    with open(f"{out}/{mode}_rank{comm.rank}.json", "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
