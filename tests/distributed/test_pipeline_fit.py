"""``kiln.fit`` of a ``PipelineParallel`` step on 2 MPI ranks: rolling checkpoints written by rank 0 alone, a resume
in a new job, failures that raise on every rank, and checkpoints a single-process ``TrainStep`` resumes from."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn.functional as F
from kiln.runtime.checkpoint_manager import CheckpointManager, load_training_checkpoint
from kiln.runtime.metrics import make_metrics
from kiln.runtime.trainer import Evaluator

from dist_models import make_model, make_optimizer
from fit_checks import (CRASH_AT, EPOCHS, UPDATES, assert_failures_raise_on_every_rank, assert_rank0_alone_wrote_checkpoints_log_and_plot,
                        assert_resumed_from_a_folder_only_rank0_sees, assert_resumed_history_is_the_uninterrupted_one, loaders,
                        mpi_jobs_fixture, resume_single_process_fit_from_epoch_2)
from pp_fit_worker import MICRO_BATCHES


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


pipeline_fit_run = mpi_jobs_fixture("pipeline_fit", "pp_fit_worker.py", "first", "resume", timeout=90)
"""Two mpiexec jobs: an uninterrupted fit and one that crashes at update CRASH_AT; then the resume of the latter."""


def test_fit_of_a_pipeline_resumes_in_a_new_job_bit_for_bit(pipeline_fit_run):
    """The last stage's losses and rank 0's evaluation reach every rank's History."""
    out = pipeline_fit_run
    uninterrupted = assert_resumed_history_is_the_uninterrupted_one(out)
    full, resumed = kiln.load(out / "full_final.npz"), kiln.load(out / "resumed_final.npz")
    assert full["optimizer"]["step"] == UPDATES
    _assert_same_training_state(resumed, full, f"resumed at update {CRASH_AT - 1} in a new job")
    model, step = _single_process_step()  # rank 0 evaluated the gathered model, not its stale copy of stage 1
    model.load_state_dict(full["model"])
    evaluated = Evaluator(step, make_metrics(["accuracy"])).evaluate(loaders()[1])
    assert evaluated == {key: uninterrupted["epochs"][-1][key] for key in ("val_loss", "val_accuracy")}


def test_fit_of_a_pipeline_writes_checkpoints_log_and_plot_on_rank_0_only(pipeline_fit_run):
    """Rank 1 sends its stage and waits; it writes nothing."""
    assert_rank0_alone_wrote_checkpoints_log_and_plot(pipeline_fit_run)


pipeline_failures_run = mpi_jobs_fixture("failures", "pp_fit_worker.py", "failures", timeout=60)
"""One job: a folder rank 0 cannot write, per-rank folders (a fit, then a resume), a loader sharded per rank."""


def test_fit_of_a_pipeline_fails_on_every_rank_without_a_hang(pipeline_failures_run):
    assert_failures_raise_on_every_rank(pipeline_failures_run, "KilnError: fit: a PipelineParallel step takes the whole batch on every rank")


def test_fit_resumes_from_a_folder_only_rank_0_sees(pipeline_failures_run):
    """Each rank names its own checkpoint folder: rank 0 chooses the checkpoint, reads it and sends it to rank 1, whose
    folder does not exist. (It used to be refused: every rank read the folder itself.)"""
    assert_resumed_from_a_folder_only_rank0_sees(pipeline_failures_run)


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

    model, step = _single_process_step()
    resume_single_process_fit_from_epoch_2(out, tmp_path, step)
    full = kiln.load(out / "full_final.npz")
    for name, value in model.state_dict().items():  # the stages' split graphs and the joint one round differently
        np.testing.assert_allclose(value, full["model"][name], rtol=1e-5, atol=1e-7, err_msg=f"{name} after the single-process resume")
