"""``kiln.fit`` of a ``PipelineParallel`` step on 2 MPI ranks: rolling checkpoints written by rank 0 alone, a resume
in a new job, failures that raise on every rank, and checkpoints a single-process ``TrainStep`` resumes from."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.runtime.checkpoint_manager import CheckpointManager, load_training_checkpoint
from kiln.runtime.metrics import make_metrics
from kiln.runtime.trainer import Evaluator

from dist_models import make_model, make_optimizer
from mpi_launch import assert_ran, run_mpi
from pp_fit_worker import BATCHES, CRASH_AT, EPOCHS, MICRO_BATCHES, loaders

UPDATES = EPOCHS * BATCHES



def _report(out, mode: str, rank: int) -> dict:
    return json.loads((out / f"{mode}_rank{rank}.json").read_text())


def _assert_same_training_state(actual: dict, expected: dict, what: str) -> None:
    """Parameters, optimizer state, step counter and groups, bit for bit."""
    assert set(actual["model"]) == set(expected["model"])
    for name, value in expected["model"].items():
        np.testing.assert_array_equal(actual["model"][name], value, err_msg=f"{what}: {name}")
    assert set(actual["optimizer"]["state"]) == set(expected["optimizer"]["state"]) == set(expected["model"])  # both stages' state
    for name, states in expected["optimizer"]["state"].items():
        for key, value in states.items():
            np.testing.assert_array_equal(actual["optimizer"]["state"][name][key], value, err_msg=f"{what}: {name} {key}")
    assert actual["optimizer"]["step"] == expected["optimizer"]["step"]
    assert actual["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]


def _single_process_step():
    model = make_model(seed=3)
    return model, kiln.compile_train_step(model, F.cross_entropy, make_optimizer("adam", model), accumulate=MICRO_BATCHES)


@pytest.fixture(scope="module")
def pipeline_fit_run(tmp_path_factory):
    """Two mpiexec jobs: an uninterrupted fit and one that crashes at update CRASH_AT; then the resume of the latter."""
    out = tmp_path_factory.mktemp("pipeline_fit")
    assert_ran(run_mpi("pp_fit_worker.py", "first", str(out), timeout=90))
    assert_ran(run_mpi("pp_fit_worker.py", "resume", str(out), timeout=90))
    return out


def test_fit_of_a_pipeline_resumes_in_a_new_job_bit_for_bit(pipeline_fit_run):
    out = pipeline_fit_run
    assert all(_report(out, "first", rank)["errors"] == {"crash": f"Crash: crash at update {CRASH_AT}"} for rank in (0, 1))
    full, resumed = kiln.load(out / "full_final.npz"), kiln.load(out / "resumed_final.npz")
    assert full["optimizer"]["step"] == UPDATES
    _assert_same_training_state(resumed, full, f"resumed at update {CRASH_AT - 1} in a new job")
    uninterrupted = _report(out, "first", 0)["histories"]["full"]
    for rank in (0, 1):  # the last stage's losses and rank 0's evaluation reach every rank's History
        history = _report(out, "resume", rank)["histories"]["resumed"]
        assert history == uninterrupted, f"rank {rank}: the resumed run's history differs from the uninterrupted one"
        assert _report(out, "first", rank)["histories"]["full"] == uninterrupted
    assert [r["step"] for r in uninterrupted["steps"]] == list(range(1, UPDATES + 1))
    model, step = _single_process_step()  # rank 0 evaluated the gathered model, not its stale copy of stage 1
    model.load_state_dict(full["model"])
    evaluated = Evaluator(step, make_metrics(["accuracy"])).evaluate(loaders()[1])
    assert evaluated == {key: uninterrupted["epochs"][-1][key] for key in ("val_loss", "val_accuracy")}


def test_fit_of_a_pipeline_writes_checkpoints_log_and_plot_on_rank_0_only(pipeline_fit_run):
    out = pipeline_fit_run
    first, resumed = [_report(out, "first", r) for r in (0, 1)], [_report(out, "resume", r) for r in (0, 1)]
    assert first[1]["writes"] == resumed[1]["writes"] == []  # rank 1 sends its stage and waits; it writes nothing
    written = [path.rsplit("/", 1)[1] for path in first[0]["writes"] + resumed[0]["writes"] if "/run/" in path]
    assert written == [f"checkpoint-{update:08d}.npz" for update in (3, 5, 6, 9, 10, 12, 15)]  # every 3 updates and each epoch's end
    assert sorted(p.name for p in (out / "run").glob("*")) == [f"checkpoint-{update:08d}.npz" for update in (10, 12, 15)]  # keep=3
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(1, UPDATES + 1))  # one rank's log: updates 1..6 before the crash, 7..15 after the resume
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == list(range(EPOCHS))
    assert first[0]["plots"] > 0 and resumed[0]["plots"] > 0 and first[1]["plots"] == resumed[1]["plots"] == 0
    assert (out / "loss.png").stat().st_size > 0
    assert all(first[0]["bars"] + resumed[0]["bars"]) and not any(first[1]["bars"] + resumed[1]["bars"])  # progress on rank 0


@pytest.fixture(scope="module")
def pipeline_failures_run(tmp_path_factory):
    """One job: a folder rank 0 cannot write, per-rank folders (a fit, then a resume), a loader sharded per rank."""
    out = tmp_path_factory.mktemp("failures")
    assert_ran(run_mpi("pp_fit_worker.py", "failures", str(out), timeout=60))
    return out


def test_fit_of_a_pipeline_fails_on_every_rank_without_a_hang(pipeline_failures_run):
    tmp_path = pipeline_failures_run
    errors = [_report(tmp_path, "failures", r)["errors"] for r in (0, 1)]
    assert errors[0]["unwritable"].startswith("FileExistsError") and "a_file" in errors[0]["unwritable"]  # rank 0's own error
    assert errors[1]["unwritable"].startswith("DistributedError: rank 0 could not write checkpoint")
    for rank in (0, 1):
        assert errors[rank]["sharded loader"].startswith("KilnError: fit: a PipelineParallel step takes the whole batch on every rank")
    assert not list(tmp_path.glob("**/.*.tmp"))  # no temporary file left behind


def test_fit_resumes_from_a_folder_only_rank_0_sees(pipeline_failures_run):
    """Each rank names its own checkpoint folder: rank 0 chooses the checkpoint, reads it and sends it to rank 1, whose
    folder does not exist. (It used to be refused: every rank read the folder itself.)"""
    tmp_path = pipeline_failures_run
    reports = [_report(tmp_path, "failures", r) for r in (0, 1)]
    for report in reports:
        assert "first unshared" not in report["errors"] and "unshared resume" not in report["errors"]
        assert report["histories"]["unshared"] == report["histories"]["uninterrupted"] == reports[0]["histories"]["uninterrupted"]
        assert [r["step"] for r in report["histories"]["unshared"]["steps"]] == list(range(1, 2 * BATCHES + 1))
    assert not (tmp_path / "unshared1").exists()
    written = [path.rsplit("/", 1)[1] for path in reports[0]["writes"] if "/unshared0/" in path]
    assert written == [f"checkpoint-{update:08d}.npz" for update in (3, 5, 6, 9, 10)]  # epoch 1, then the resume from update 5


def test_a_pipeline_fit_checkpoint_is_a_single_process_checkpoint(pipeline_fit_run, tmp_path):
    """The rolling checkpoint holds the gathered state (what pipe.save writes) and a single-process fit resumes from it."""
    out = pipeline_fit_run
    last = load_training_checkpoint(str(out / "run" / f"checkpoint-{UPDATES:08d}.npz"))  # manifest and checksum verify
    assert last["manifest"]["step"] == UPDATES
    _assert_same_training_state(last["train"], kiln.load(out / "full_final.npz"), "fit's checkpoint against pipe.save")

    model, step = _single_process_step()
    assert CheckpointManager(str(out / "run")).restore(step)["loader"]["epoch"] == EPOCHS
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, last["train"]["model"][name], err_msg=name)

    shutil.copy(out / "run" / f"checkpoint-{2 * BATCHES:08d}.npz", tmp_path)  # the end of epoch 2 of 3
    model, step = _single_process_step()
    history = kiln.fit(step, loaders()[0], epochs=EPOCHS, checkpoint_dir=str(tmp_path), resume=True, progress=False)
    assert [r["step"] for r in history.steps] == list(range(1, UPDATES + 1))
    full = kiln.load(out / "full_final.npz")
    for name, value in model.state_dict().items():  # the stages' split graphs and the joint one round differently
        np.testing.assert_allclose(value, full["model"][name], rtol=1e-5, atol=1e-7, err_msg=f"{name} after the single-process resume")
