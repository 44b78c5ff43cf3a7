"""MPI worker: ``kiln.fit`` resumes from a checkpoint folder only rank 0 sees, for data, pipeline and tensor parallelism.

``python -m mpi4py ckpt_rank0_folder_worker.py first OUT``: per kind, an uninterrupted fit of ``EPOCHS`` epochs (no
checkpoints), then a fit that crashes at update ``CRASH_AT`` whose ``checkpoint_dir`` is ``OUT/{kind}/rank{r}``: each rank
names its own folder (no shared file system), so rank 0's holds the checkpoints and rank 1's is never made.
``... resume OUT``: per kind, rank 1's folder is made, empty; a new step (other initial values) resumes from
``OUT/{kind}/rank{r}`` and trains to ``EPOCHS`` epochs.

Each rank writes ``{mode}_rank{r}.json`` (its histories and errors) and ``{kind}_{run}_rank{r}.npz``, the state of its
step (``model/{name}``, ``optimizer/{name}/{state name}``, ``step``): a data-parallel rank's whole copy, a
tensor-parallel rank's shards, a pipeline's whole state gathered on rank 0 (rank 1 writes none).
"""

import os
import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn.functional as F

from dist_models import make_model, make_optimizer
from fit_checks import CrashAt, attempt, loaders, write_report
from pp_fit_worker import pipeline
from tp_fit_worker import tensor_parallel_step

EPOCHS, EVERY, CRASH_AT = 2, 3, 7
"""2 epochs of 5 batches, a checkpoint every 3 updates (and at each epoch's end), a crash at update 7 (mid-epoch 1):
the resume starts from update 6."""
KINDS = ("data", "pipeline", "tensor")


def data_parallel(seed: int):
    model = make_model(seed)
    return dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, make_optimizer("adam", model)))


def make(kind: str, seed: int, comm):
    """The step of ``kind`` and its training and evaluation loaders (``fit_checks``' batches; data parallel: each rank
    served its half of every batch)."""
    if kind == "data":
        return data_parallel(seed), *loaders(comm.rank, comm.size)
    if kind == "pipeline":
        return pipeline(seed), *loaders()
    return tensor_parallel_step(seed), *loaders()


def fit(kind: str, seed: int, comm, folder: str | None, **options) -> tuple[object, dict]:
    step, train, test = make(kind, seed, comm)
    history = kiln.fit(step, train, epochs=EPOCHS, eval_loader=test, metrics=["accuracy"], checkpoint_dir=folder,
                       checkpoint_every=EVERY, progress=False, **options)
    return step, {"steps": history.steps, "epochs": history.epochs}


def save_state(step, path: str) -> None:
    """The step's training state, flattened (a pipeline's ``state_dict()`` is a collective: whole on rank 0, else None)."""
    state = step.state_dict()
    if state is None:
        return
    arrays = {f"model/{name}": a for name, a in state["model"].items()}
    arrays |= {f"optimizer/{name}/{key}": a for name, states in state["optimizer"]["state"].items() for key, a in states.items()}
    np.savez(path, step=state["optimizer"]["step"], **arrays)


def main(mode: str, out: str) -> None:
    comm = dist.init()  # an error no attempt() expects ends the job on every rank
    report = {"histories": {}, "errors": {}}
    for kind in KINDS:
        folder = f"{out}/{kind}/rank{comm.rank}"  # only rank 0's folder ever holds checkpoints
        if mode == "first":
            step, report["histories"][f"{kind} full"] = fit(kind, 0, comm, None)
            save_state(step, f"{out}/{kind}_full_rank{comm.rank}.npz")
            attempt(report, f"{kind} crash", lambda: fit(kind, 0, comm, folder, callbacks=[CrashAt(CRASH_AT)]))
        else:
            if comm.rank != 0:
                os.makedirs(folder)  # empty: rank 1 sees no checkpoint
            step, report["histories"][f"{kind} resumed"] = fit(kind, 5, comm, folder, resume=True)
            save_state(step, f"{out}/{kind}_resumed_rank{comm.rank}.npz")
    write_report(report, out, mode, comm.rank)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
