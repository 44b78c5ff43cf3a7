"""``kiln.fit`` of a plain ``TrainStep`` whose model holds tensor-parallel layers, on 2 MPI ranks: rank 0 alone writes
the checkpoints (the unsplit model, joined from the shards), log and plot; a resume in a new job; failures that raise
on every rank; and checkpoints the unsplit single-process model (``dist_models.MLP2``) loads and resumes from."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime.checkpoint_manager import CheckpointManager, load_training_checkpoint, parallelism
from kiln.runtime.distributed import ColumnParallelLinear, DistributedError, RowParallelLinear
from kiln.runtime.distributed.tensor_parallel import split_entries, tensor_parallel_comm

from dist_models import MLP2, make_optimizer
from fit_checks import (EPOCHS, UPDATES, assert_failures_raise_on_every_rank, assert_rank0_alone_wrote_checkpoints_log_and_plot,
                        assert_resumed_from_a_folder_only_rank0_sees, assert_resumed_history_is_the_uninterrupted_one, loaders,
                        mpi_jobs_fixture, resume_single_process_fit_from_epoch_2)

SPLIT_AXES = {"fc1.weight": 0, "fc1.bias": 0, "fc2.weight": 1}
"""How the worker's ``SplitMLP`` splits ``MLP2``'s parameters (``fc2.bias`` is whole on every rank)."""
RANKS = 2


def _shards(out, run: str) -> list[dict[str, np.ndarray]]:
    return [dict(np.load(out / f"{run}_rank{rank}.npz")) for rank in range(RANKS)]


def _joined(shards: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    """The unsplit array of ``key`` (a parameter name, or ``name.state``): the ranks' blocks in rank order."""
    axis = next((axis for name, axis in SPLIT_AXES.items() if key == name or key.startswith(f"{name}.")), None)
    if axis is None:  # whole on every rank: identical copies
        for shard in shards[1:]:
            np.testing.assert_array_equal(shard[key], shards[0][key], err_msg=f"{key} differs between ranks")
        return shards[0][key]
    return np.concatenate([shard[key] for shard in shards], axis)


def _single_process_step(seed: int = 3):
    kiln.manual_seed(seed)  # other initial values than the split run's: a restore must replace them
    model = MLP2()
    return model, kiln.compile_train_step(model, F.cross_entropy, make_optimizer("adam", model))


tensor_parallel_fit_run = mpi_jobs_fixture("tensor_parallel_fit", "tp_fit_worker.py", "first", "resume", timeout=90)
"""Two mpiexec jobs: an uninterrupted fit and one that crashes at update CRASH_AT; then the resume of the latter."""


def test_fit_with_tensor_parallel_layers_resumes_in_a_new_job_bit_for_bit(tensor_parallel_fit_run):
    """Every rank trained and evaluated on the whole batch: the same losses and metrics everywhere."""
    out = tensor_parallel_fit_run
    uninterrupted = assert_resumed_history_is_the_uninterrupted_one(out)
    full, resumed = _shards(out, "full"), _shards(out, "resumed")
    for rank in range(RANKS):  # each rank took its own shard back from the unsplit checkpoint
        assert int(full[rank]["step"]) == int(resumed[rank]["step"]) == UPDATES
        assert set(resumed[rank]) == set(full[rank])
        for key, value in full[rank].items():
            np.testing.assert_array_equal(resumed[rank][key], value, err_msg=f"rank {rank}: {key} after the resume in a new job")
    assert [r["epoch"] for r in uninterrupted["epochs"]] == list(range(EPOCHS)) and "val_accuracy" in uninterrupted["epochs"][-1]


def test_fit_with_tensor_parallel_layers_writes_checkpoints_log_and_plot_on_rank_0_only(tensor_parallel_fit_run):
    """Rank 1 sends its shards and waits; it writes nothing."""
    assert_rank0_alone_wrote_checkpoints_log_and_plot(tensor_parallel_fit_run)


def test_a_tensor_parallel_checkpoint_holds_the_unsplit_model(tensor_parallel_fit_run, tmp_path):
    """The checkpoint is the joined shards in TrainStep's format: MLP2 (nn.Linear in place of the split layers) loads it,
    and a single-process fit resumes from it."""
    out = tensor_parallel_fit_run
    last = load_training_checkpoint(str(out / "run" / f"checkpoint-{UPDATES:08d}.npz"))  # manifest and checksum verify
    full = _shards(out, "full")
    model, step = _single_process_step()
    assert set(last["train"]["model"]) == set(model.state_dict())
    assert last["manifest"]["step"] == last["train"]["optimizer"]["step"] == UPDATES
    for name, value in last["train"]["model"].items():
        np.testing.assert_array_equal(value, _joined(full, name), err_msg=name)
        for key, state in last["train"]["optimizer"]["state"][name].items():
            np.testing.assert_array_equal(state, _joined(full, f"{name}.{key}"), err_msg=f"{name}.{key}")

    assert CheckpointManager(str(out / "run")).restore(step)["loader"]["epoch"] == EPOCHS
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, _joined(full, name), err_msg=f"{name} in the unsplit model")

    model, step = _single_process_step()
    resume_single_process_fit_from_epoch_2(out, tmp_path, step)
    for name, value in model.state_dict().items():  # the split matmuls and the whole one round differently
        np.testing.assert_allclose(value, _joined(full, name), rtol=1e-5, atol=1e-6, err_msg=f"{name} after the single-process resume")


tensor_parallel_failures_run = mpi_jobs_fixture("failures", "tp_fit_worker.py", "failures", timeout=60)
"""One job: a folder rank 0 cannot write, per-rank folders (a fit, then a resume), a loader sharded per rank."""


def test_fit_with_tensor_parallel_layers_fails_on_every_rank_without_a_hang(tensor_parallel_failures_run):
    assert_failures_raise_on_every_rank(tensor_parallel_failures_run,
                                        "KilnError: fit: a step with tensor-parallel layers takes the whole batch on every rank")


def test_fit_resumes_from_a_folder_only_rank_0_sees(tensor_parallel_failures_run):
    """Each rank names its own checkpoint folder: rank 0 chooses the checkpoint, reads it and sends it to rank 1, whose
    folder does not exist. (It used to be refused: every rank read the folder itself.)"""
    assert_resumed_from_a_folder_only_rank0_sees(tensor_parallel_failures_run)


# --- in one process: finding the layers and their communicator -------------------------------------


class _Split(nn.Module):
    def __init__(self, first, second):
        super().__init__()
        self.fc1, self.fc2 = ColumnParallelLinear(4, 6, comm=first), RowParallelLinear(6, 3, bias=False, comm=second)


def test_a_model_with_tensor_parallel_layers_names_their_communicator_and_split_parameters():
    comm = SimpleNamespace(rank=0, size=1)
    model = _Split(comm, comm)
    assert tensor_parallel_comm(model) is comm and tensor_parallel_comm(MLP2()) is None and tensor_parallel_comm(None) is None
    assert split_entries(model) == {"fc1.weight": 0, "fc1.bias": 0, "fc2.weight": 1}  # no fc2.bias: bias=False
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    assert parallelism(step) == "tensor" and parallelism(kiln.compile_train_step(MLP2(), F.cross_entropy, kiln.optim.SGD(MLP2().parameters(), lr=0.1))) is None


def test_tensor_parallel_layers_split_over_different_communicators_are_refused():
    model = _Split(SimpleNamespace(rank=0, size=1), SimpleNamespace(rank=0, size=1))
    with pytest.raises(DistributedError, match=r"split over different communicators \('fc1' and 'fc2'\)"):
        tensor_parallel_comm(model)
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(DistributedError, match="build them all with the same comm="):
        kiln.fit(step, loaders()[0], progress=False)
