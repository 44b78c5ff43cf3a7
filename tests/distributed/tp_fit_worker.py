"""MPI worker: ``kiln.fit`` of a plain ``TrainStep`` whose model holds a column- then a row-split Linear (tensor parallel).

``python -m mpi4py tp_fit_worker.py first OUT``: an uninterrupted fit of ``EPOCHS`` epochs (``OUT/full``), each rank
saving its final shards and their optimizer state to ``OUT/full_rank{r}.npz``; then a fit into ``OUT/run`` that
crashes at update ``CRASH_AT``.
``... resume OUT``: a new model (other initial values) resumes ``OUT/run`` and trains to ``EPOCHS`` epochs; each rank
saves its shards to ``OUT/resumed_rank{r}.npz``.
``... failures OUT``: the checkpoint folder is a file, so rank 0 cannot write (every rank must raise, none wait); then
each rank names its own folder (no shared file system): a fit of one epoch writes checkpoints into rank 0's alone, and
a new step (other initial values) resumes from it to epoch 2, rank 1's folder never made (rank 0 reads the checkpoint
for both), to equal a fit of 2 epochs without checkpoints; then a loader sharded per rank (as for ``DataParallel``), which every rank must refuse.

Each rank writes ``{mode}_rank{r}.json``: its histories, the files ``kiln.runtime.checkpoint.save`` wrote on it, how
often it drew the loss curve, whether it showed a progress bar, and the errors it raised. The test imports the
constants, ``SplitMLP`` and ``loaders`` (the job runs only under ``__main__``).
"""

import dataclasses
import json
import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn as nn
import kiln.nn.functional as F
import kiln.runtime.callbacks as callbacks
import kiln.runtime.trainer as trainer
from kiln.runtime import checkpoint
from kiln.runtime.callbacks import Callback
from kiln.runtime.data import ArrayDataset, DataLoader

from dist_models import BATCH, SIZES, dataset, make_optimizer

EPOCHS, BATCHES, EVERY, CRASH_AT = 3, 5, 3, 7
"""3 epochs of 5 batches, a checkpoint every 3 updates (and at each epoch's end), a crash at update 7."""


class SplitMLP(nn.Module):
    """``dist_models.MLP2`` split over the ranks: the same names, ``fc1`` column-split and ``fc2`` row-split."""

    def __init__(self):
        super().__init__()
        self.fc1 = dist.ColumnParallelLinear(SIZES[0], SIZES[1])
        self.fc2 = dist.RowParallelLinear(SIZES[1], SIZES[-1])

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def loaders() -> tuple[DataLoader, DataLoader]:
    """Shuffled training batches and an evaluation set; every rank iterates the same, unsharded loader (each rank
    computes its shard of every layer for the whole batch)."""
    x, y = dataset(steps=BATCHES + 2)
    rows = BATCHES * BATCH
    train = DataLoader(ArrayDataset(x[:rows], y[:rows]), batch_size=BATCH, shuffle=True, seed=0, prefetch=0)
    return train, DataLoader(ArrayDataset(x[rows:], y[rows:]), batch_size=BATCH)


class Crash(Exception):
    pass


class CrashAt(Callback):
    """Raise on every rank after update ``at`` (the checkpoint before it is on disk), before the log records it."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, run, record):
        if record["step"] == self.at:
            raise Crash(f"crash at update {self.at}")


def tensor_parallel_step(seed: int):
    kiln.manual_seed(seed)
    model = SplitMLP()
    return kiln.compile_train_step(model, F.cross_entropy, make_optimizer("adam", model))


def fit(step, folder: str, epochs: int = EPOCHS, **options) -> dict:
    train, test = loaders()
    history = kiln.fit(step, train, epochs=epochs, eval_loader=test, metrics=["accuracy"], checkpoint_dir=folder,
                       checkpoint_every=EVERY, **options)
    return {"steps": history.steps, "epochs": history.epochs}


def save_shards(step, path: str) -> None:
    """This rank's parameters and optimizer state (``{name}`` and ``{name}.{state name}``) and the update count."""
    state = step.state_dict()
    arrays = {**state["model"], **{f"{name}.{key}": a for name, arrays in state["optimizer"]["state"].items() for key, a in arrays.items()}}
    np.savez(path, step=state["optimizer"]["step"], **arrays)


def watch(report: dict) -> None:
    """Record on this rank each checkpoint file written, each loss-curve drawing and whether a progress bar showed."""
    save, plot, bar = checkpoint.save, callbacks.plot_loss_curve, trainer._progress_bar
    checkpoint.save = lambda path, tree: (report["writes"].append(str(path)), save(path, tree))[1]
    callbacks.plot_loss_curve = lambda history, path: (report.__setitem__("plots", report["plots"] + 1), plot(history, path))[1]
    trainer._progress_bar = lambda *args: (lambda shown: (report["bars"].append(shown is not None), shown)[1])(bar(*args))


def attempt(report: dict, what: str, action) -> None:
    try:
        action()
    except Exception as error:  # every rank reports what it raised
        report["errors"][what] = f"{type(error).__name__}: {error}"


def main(mode: str, out: str) -> None:
    comm = dist.init(abort_on_error=mode != "failures")  # a rank's error ends the job, but for the errors the test asks for
    report = {"writes": [], "plots": 0, "bars": [], "histories": {}, "errors": {}}
    watch(report)
    if mode == "first":
        full = tensor_parallel_step(seed=0)
        report["histories"]["full"] = fit(full, f"{out}/full")
        save_shards(full, f"{out}/full_rank{comm.rank}.npz")
        attempt(report, "crash", lambda: fit(tensor_parallel_step(seed=0), f"{out}/run", log_path=f"{out}/log.jsonl",
                                             plot_path=f"{out}/loss.png", callbacks=[CrashAt(CRASH_AT)]))
    elif mode == "resume":
        resumed = tensor_parallel_step(seed=5)  # other initial values: the resume must replace them on every rank
        report["histories"]["resumed"] = fit(resumed, f"{out}/run", resume=True, log_path=f"{out}/log.jsonl", plot_path=f"{out}/loss.png")
        save_shards(resumed, f"{out}/resumed_rank{comm.rank}.npz")
    else:
        if comm.rank == 0:
            open(f"{out}/a_file", "w").close()
        comm.barrier()
        attempt(report, "unwritable", lambda: fit(tensor_parallel_step(seed=0), f"{out}/a_file", epochs=1))
        own = f"{out}/unshared{comm.rank}"  # rank 0 writes its checkpoints here; rank 1's folder is never made
        attempt(report, "first unshared", lambda: fit(tensor_parallel_step(seed=0), own, epochs=1))
        histories = report["histories"]
        histories["uninterrupted"] = fit(tensor_parallel_step(seed=0), None, epochs=2)
        attempt(report, "unshared resume", lambda: histories.update(unshared=fit(tensor_parallel_step(seed=5), own, epochs=2, resume=True)))
        sharded = dataclasses.replace(loaders()[0], rank=comm.rank, world_size=comm.size)
        attempt(report, "sharded loader", lambda: kiln.fit(tensor_parallel_step(seed=0), sharded, progress=False))
    with open(f"{out}/{mode}_rank{comm.rank}.json", "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
