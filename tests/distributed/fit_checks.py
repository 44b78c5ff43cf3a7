"""What the MPI tests of ``kiln.fit`` on a distributed step share: the run, the worker's three jobs and their checks.

``pp_fit_worker`` (a 2-stage ``PipelineParallel``) and ``tp_fit_worker`` (a ``TrainStep`` with tensor-parallel layers)
differ only in the step they build and how they keep its final state; ``run_worker`` runs the same jobs for both:

``first OUT``: an uninterrupted fit of ``EPOCHS`` epochs (``OUT/full``), its final state kept as run ``full``; then a
fit into ``OUT/run`` (log ``OUT/log.jsonl``, plot ``OUT/loss.png``) that crashes at update ``CRASH_AT``.
``resume OUT``: a new step (other initial values) resumes ``OUT/run`` and trains to ``EPOCHS`` epochs; its final state
is kept as run ``resumed``.
``failures OUT``: the checkpoint folder is a file, so rank 0 cannot write (every rank must raise, none wait); then each
rank names its own folder (no shared file system): a fit of one epoch writes checkpoints into rank 0's alone, and a new
step (other initial values) resumes from it to epoch 2, rank 1's folder never made (rank 0 reads the checkpoint for
both), to equal a fit of 2 epochs without checkpoints; then a loader sharded per rank (as for ``DataParallel``), which
every rank must refuse.

Each rank writes ``{mode}_rank{r}.json`` (``write_report``; the tests read it with ``read_report``): its histories,
the files ``kiln.runtime.checkpoint.save`` wrote on it, how often it drew the loss curve, whether it showed a progress
bar, and the errors it raised. The ``assert_...`` functions are the tests' checks of those reports and folders.

The MPI workers import this module: nothing at its top needs pytest or the tests folder (``mpi_launch`` does).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Callable

import kiln
import kiln.distributed as dist
import kiln.runtime.callbacks as callbacks
import kiln.runtime.trainer as trainer
from kiln.runtime import checkpoint
from kiln.runtime.callbacks import Callback
from kiln.runtime.data import ArrayDataset, DataLoader

from dist_models import BATCH, dataset

EPOCHS, BATCHES, EVERY, CRASH_AT = 3, 5, 3, 7
"""3 epochs of 5 batches, a checkpoint every 3 updates (and at each epoch's end), a crash at update 7."""
UPDATES = EPOCHS * BATCHES

# --- in the MPI worker ------------------------------------------------------------------------------


def loaders(rank: int = 0, world_size: int = 1) -> tuple[DataLoader, DataLoader]:
    """``BATCHES`` shuffled training batches and an evaluation set. By default every rank iterates the same, unsharded
    loader (a pipeline takes the whole batch on every rank; a tensor-parallel rank computes its shard of every layer for
    the whole batch); with ``world_size`` ranks, rank ``rank`` is served its part of every batch (data parallel)."""
    x, y = dataset(steps=BATCHES + 2)
    rows = BATCHES * BATCH
    train = DataLoader(ArrayDataset(x[:rows], y[:rows]), batch_size=BATCH // world_size, shuffle=True, seed=0, prefetch=0,
                       rank=rank, world_size=world_size)
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


def checkpointed_fit(step, folder: str | None, epochs: int = EPOCHS, **options) -> dict:
    """``kiln.fit`` on ``loaders()``, evaluated and checkpointed every ``EVERY`` updates into ``folder``; its history."""
    train, test = loaders()
    history = kiln.fit(step, train, epochs=epochs, eval_loader=test, metrics=["accuracy"], checkpoint_dir=folder,
                       checkpoint_every=EVERY, **options)
    return {"steps": history.steps, "epochs": history.epochs}


def record_outputs(report: dict) -> None:
    """Record on this rank each checkpoint file written, each loss-curve drawing and whether a progress bar showed."""
    save, plot, bar = checkpoint.save, callbacks.plot_loss_curve, trainer._progress_bar
    checkpoint.save = lambda path, tree: (report["writes"].append(str(path)), save(path, tree))[1]
    callbacks.plot_loss_curve = lambda history, path: (report.__setitem__("plots", report["plots"] + 1), plot(history, path))[1]
    trainer._progress_bar = lambda *args: (lambda shown: (report["bars"].append(shown is not None), shown)[1])(bar(*args))


def attempt(report: dict, what: str, action) -> None:
    """Run ``action``; what it raises goes to ``report["errors"][what]``, so every rank reports its own error."""
    try:
        action()
    except Exception as error:
        report["errors"][what] = f"{type(error).__name__}: {error}"


def write_report(report: dict, out: str, mode: str, rank: int) -> None:
    with open(f"{out}/{mode}_rank{rank}.json", "w") as file:
        json.dump(report, file)


MakeStep = Callable[[int], object]
"""The worker's step, built from a seed for its initial values."""
SaveFinal = Callable[[object, str, str, int], None]
"""``save_final(step, out, run, rank)``: keep the step's final state of run ``full`` or ``resumed`` under ``out``."""


def fit_then_crash(report: dict, out: str, rank: int, make_step: MakeStep, save_final: SaveFinal) -> None:
    full = make_step(0)
    report["histories"]["full"] = checkpointed_fit(full, f"{out}/full")
    save_final(full, out, "full", rank)
    attempt(report, "crash", lambda: checkpointed_fit(make_step(0), f"{out}/run", log_path=f"{out}/log.jsonl",
                                                      plot_path=f"{out}/loss.png", callbacks=[CrashAt(CRASH_AT)]))


def resume_the_crashed_fit(report: dict, out: str, rank: int, make_step: MakeStep, save_final: SaveFinal) -> None:
    resumed = make_step(5)  # other initial values: the resume must replace them on every rank
    report["histories"]["resumed"] = checkpointed_fit(resumed, f"{out}/run", resume=True, log_path=f"{out}/log.jsonl",
                                                      plot_path=f"{out}/loss.png")
    save_final(resumed, out, "resumed", rank)


def fit_into_failures(report: dict, out: str, comm, make_step: MakeStep) -> None:
    """A folder rank 0 cannot write, per-rank folders (a fit, then a resume), a loader sharded per rank."""
    if comm.rank == 0:
        open(f"{out}/a_file", "w").close()
    comm.barrier()
    attempt(report, "unwritable", lambda: checkpointed_fit(make_step(0), f"{out}/a_file", epochs=1))
    own = f"{out}/unshared{comm.rank}"  # rank 0 writes its checkpoints here; rank 1's folder is never made
    attempt(report, "first unshared", lambda: checkpointed_fit(make_step(0), own, epochs=1))
    histories = report["histories"]
    histories["uninterrupted"] = checkpointed_fit(make_step(0), None, epochs=2)
    attempt(report, "unshared resume", lambda: histories.update(unshared=checkpointed_fit(make_step(5), own, epochs=2, resume=True)))
    sharded = dataclasses.replace(loaders()[0], rank=comm.rank, world_size=comm.size)
    attempt(report, "sharded loader", lambda: kiln.fit(make_step(0), sharded, progress=False))


def run_worker(mode: str, out: str, make_step: MakeStep, save_final: SaveFinal) -> None:
    """The job ``mode`` (``first``, ``resume`` or ``failures``) on this rank, then its report."""
    comm = dist.init(abort_on_error=mode != "failures")  # a rank's error ends the job, but for the errors the test asks for
    report = {"writes": [], "plots": 0, "bars": [], "histories": {}, "errors": {}}
    record_outputs(report)
    if mode == "first":
        fit_then_crash(report, out, comm.rank, make_step, save_final)
    elif mode == "resume":
        resume_the_crashed_fit(report, out, comm.rank, make_step, save_final)
    else:
        fit_into_failures(report, out, comm, make_step)
    write_report(report, out, mode, comm.rank)


# --- in the test ------------------------------------------------------------------------------------


def mpi_jobs_fixture(folder: str, script: str, *modes: str, timeout: float):
    """A module-scoped fixture, named by the test module's variable it is assigned to: a new folder ``folder`` and in
    it one 2-rank job of ``script`` per mode, in order, each of which must exit 0; its value is the folder."""
    import pytest
    from mpi_launch import assert_ran, run_mpi  # here, not at the top: the workers import this module

    @pytest.fixture(scope="module")
    def jobs(tmp_path_factory) -> Path:
        out = tmp_path_factory.mktemp(folder)
        for mode in modes:
            assert_ran(run_mpi(script, mode, str(out), timeout=timeout))
        return out

    return jobs


def read_report(out: Path, mode: str, rank: int) -> dict:
    return json.loads((out / f"{mode}_rank{rank}.json").read_text())


def _checkpoint_names(updates) -> list[str]:
    return [f"checkpoint-{update:08d}.npz" for update in updates]


def assert_resumed_history_is_the_uninterrupted_one(out: Path) -> dict:
    """Both ranks crashed at ``CRASH_AT``; every rank's History of the resumed run and of the uninterrupted one are the
    same, all ``UPDATES`` updates. Returns that History."""
    assert all(read_report(out, "first", rank)["errors"] == {"crash": f"Crash: crash at update {CRASH_AT}"} for rank in (0, 1))
    uninterrupted = read_report(out, "first", 0)["histories"]["full"]
    for rank in (0, 1):
        history = read_report(out, "resume", rank)["histories"]["resumed"]
        assert history == uninterrupted, f"rank {rank}: the resumed run's history differs from the uninterrupted one"
        assert read_report(out, "first", rank)["histories"]["full"] == uninterrupted
    assert [r["step"] for r in uninterrupted["steps"]] == list(range(1, UPDATES + 1))
    return uninterrupted


def assert_rank0_alone_wrote_checkpoints_log_and_plot(out: Path) -> None:
    first, resumed = [read_report(out, "first", r) for r in (0, 1)], [read_report(out, "resume", r) for r in (0, 1)]
    assert first[1]["writes"] == resumed[1]["writes"] == []  # rank 1 sends its part of the state and waits; it writes nothing
    written = [path.rsplit("/", 1)[1] for path in first[0]["writes"] + resumed[0]["writes"] if "/run/" in path]
    assert written == _checkpoint_names((3, 5, 6, 9, 10, 12, 15))  # every 3 updates and each epoch's end
    assert sorted(p.name for p in (out / "run").glob("*")) == _checkpoint_names((10, 12, 15))  # keep=3
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # one rank's log, once: updates 1..6 before the crash, 7..15 after the resume
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, UPDATES + 1))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == list(range(EPOCHS))
    assert first[0]["plots"] > 0 and resumed[0]["plots"] > 0 and first[1]["plots"] == resumed[1]["plots"] == 0
    assert (out / "loss.png").stat().st_size > 0
    assert all(first[0]["bars"] + resumed[0]["bars"]) and not any(first[1]["bars"] + resumed[1]["bars"])  # progress on rank 0


def assert_failures_raise_on_every_rank(out: Path, sharded_loader_error: str) -> None:
    """The unwritable folder raised on both ranks, the sharded loader with ``sharded_loader_error``; no temporary file."""
    errors = [read_report(out, "failures", r)["errors"] for r in (0, 1)]
    assert errors[0]["unwritable"].startswith("FileExistsError") and "a_file" in errors[0]["unwritable"]  # rank 0's own error
    assert errors[1]["unwritable"].startswith("DistributedError: rank 0 could not write checkpoint")
    for rank in (0, 1):
        assert errors[rank]["sharded loader"].startswith(sharded_loader_error)
    assert not list(out.glob("**/.*.tmp"))  # no temporary file left behind


def assert_resumed_from_a_folder_only_rank0_sees(out: Path) -> None:
    """The per-rank folders' fit and resume raised nothing and equal the fit without checkpoints on both ranks; rank 1's
    folder was never made."""
    reports = [read_report(out, "failures", r) for r in (0, 1)]
    for report in reports:
        assert "first unshared" not in report["errors"] and "unshared resume" not in report["errors"]
        assert report["histories"]["unshared"] == report["histories"]["uninterrupted"] == reports[0]["histories"]["uninterrupted"]
        assert [r["step"] for r in report["histories"]["unshared"]["steps"]] == list(range(1, 2 * BATCHES + 1))
    assert not (out / "unshared1").exists()
    written = [path.rsplit("/", 1)[1] for path in reports[0]["writes"] if "/unshared0/" in path]
    assert written == _checkpoint_names((3, 5, 6, 9, 10))  # epoch 1, then the resume from update 5


def resume_single_process_fit_from_epoch_2(out: Path, tmp_path: Path, step) -> None:
    """A single-process ``step`` fits to ``EPOCHS`` epochs from the distributed run's checkpoint at the end of epoch 2
    (copied alone into ``tmp_path``), through all ``UPDATES`` updates."""
    shutil.copy(out / "run" / f"checkpoint-{2 * BATCHES:08d}.npz", tmp_path)
    history = kiln.fit(step, loaders()[0], epochs=EPOCHS, checkpoint_dir=str(tmp_path), resume=True, progress=False)
    assert [r["step"] for r in history.steps] == list(range(1, UPDATES + 1))
