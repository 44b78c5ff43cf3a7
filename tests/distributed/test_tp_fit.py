"""``kiln.fit`` of a plain ``TrainStep`` whose model holds tensor-parallel layers, on 2 MPI ranks: rank 0 alone writes
the checkpoints (the unsplit model, joined from the shards), log and plot; a resume in a new job; failures that raise
on every rank; and checkpoints the unsplit single-process model (``dist_models.MLP2``) loads and resumes from."""

from __future__ import annotations

import json
import shutil
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
from mpi_launch import assert_ran, run_mpi
from tp_fit_worker import BATCHES, CRASH_AT, EPOCHS, loaders

UPDATES = EPOCHS * BATCHES
SPLIT_AXES = {"fc1.weight": 0, "fc1.bias": 0, "fc2.weight": 1}
"""How the worker's ``SplitMLP`` splits ``MLP2``'s parameters (``fc2.bias`` is whole on every rank)."""
RANKS = 2


def _report(out, mode: str, rank: int) -> dict:
    return json.loads((out / f"{mode}_rank{rank}.json").read_text())


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


def _single_process_step():
    kiln.manual_seed(3)  # other initial values: a restore must replace them
    model = MLP2()
    return model, kiln.compile_train_step(model, F.cross_entropy, make_optimizer("adam", model))


@pytest.fixture(scope="module")
def tensor_parallel_fit_run(tmp_path_factory):
    """Two mpiexec jobs: an uninterrupted fit and one that crashes at update CRASH_AT; then the resume of the latter."""
    out = tmp_path_factory.mktemp("tensor_parallel_fit")
    assert_ran(run_mpi("tp_fit_worker.py", "first", str(out), timeout=90))
    assert_ran(run_mpi("tp_fit_worker.py", "resume", str(out), timeout=90))
    return out


def test_fit_with_tensor_parallel_layers_resumes_in_a_new_job_bit_for_bit(tensor_parallel_fit_run):
    out = tensor_parallel_fit_run
    assert all(_report(out, "first", rank)["errors"] == {"crash": f"Crash: crash at update {CRASH_AT}"} for rank in (0, 1))
    full, resumed = _shards(out, "full"), _shards(out, "resumed")
    for rank in range(RANKS):  # each rank took its own shard back from the unsplit checkpoint
        assert int(full[rank]["step"]) == int(resumed[rank]["step"]) == UPDATES
        assert set(resumed[rank]) == set(full[rank])
        for key, value in full[rank].items():
            np.testing.assert_array_equal(resumed[rank][key], value, err_msg=f"rank {rank}: {key} after the resume in a new job")
    uninterrupted = _report(out, "first", 0)["histories"]["full"]
    for rank in (0, 1):  # every rank trained and evaluated on the whole batch: the same losses and metrics everywhere
        assert _report(out, "resume", rank)["histories"]["resumed"] == uninterrupted, f"rank {rank}: the resumed history differs"
        assert _report(out, "first", rank)["histories"]["full"] == uninterrupted
    assert [r["step"] for r in uninterrupted["steps"]] == list(range(1, UPDATES + 1))
    assert [r["epoch"] for r in uninterrupted["epochs"]] == list(range(EPOCHS)) and "val_accuracy" in uninterrupted["epochs"][-1]


def test_fit_with_tensor_parallel_layers_writes_checkpoints_log_and_plot_on_rank_0_only(tensor_parallel_fit_run):
    out = tensor_parallel_fit_run
    first, resumed = [_report(out, "first", r) for r in (0, 1)], [_report(out, "resume", r) for r in (0, 1)]
    assert first[1]["writes"] == resumed[1]["writes"] == []  # rank 1 sends its shards and waits; it writes nothing
    written = [path.rsplit("/", 1)[1] for path in first[0]["writes"] + resumed[0]["writes"] if "/run/" in path]
    assert written == [f"checkpoint-{update:08d}.npz" for update in (3, 5, 6, 9, 10, 12, 15)]  # every 3 updates and each epoch's end
    assert sorted(p.name for p in (out / "run").glob("*")) == [f"checkpoint-{update:08d}.npz" for update in (10, 12, 15)]  # keep=3
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, UPDATES + 1))  # one rank's log, once
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == list(range(EPOCHS))
    assert first[0]["plots"] > 0 and resumed[0]["plots"] > 0 and first[1]["plots"] == resumed[1]["plots"] == 0
    assert (out / "loss.png").stat().st_size > 0
    assert all(first[0]["bars"] + resumed[0]["bars"]) and not any(first[1]["bars"] + resumed[1]["bars"])  # progress on rank 0


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

    shutil.copy(out / "run" / f"checkpoint-{2 * BATCHES:08d}.npz", tmp_path)  # the end of epoch 2 of 3
    model, step = _single_process_step()
    history = kiln.fit(step, loaders()[0], epochs=EPOCHS, checkpoint_dir=str(tmp_path), resume=True, progress=False)
    assert [r["step"] for r in history.steps] == list(range(1, UPDATES + 1))
    for name, value in model.state_dict().items():  # the split matmuls and the whole one round differently
        np.testing.assert_allclose(value, _joined(full, name), rtol=1e-5, atol=1e-6, err_msg=f"{name} after the single-process resume")


@pytest.fixture(scope="module")
def tensor_parallel_failures_run(tmp_path_factory):
    """One job: a folder rank 0 cannot write, per-rank folders (a fit, then a resume), a loader sharded per rank."""
    out = tmp_path_factory.mktemp("failures")
    assert_ran(run_mpi("tp_fit_worker.py", "failures", str(out), timeout=60))
    return out


def test_fit_with_tensor_parallel_layers_fails_on_every_rank_without_a_hang(tensor_parallel_failures_run):
    tmp_path = tensor_parallel_failures_run
    errors = [_report(tmp_path, "failures", r)["errors"] for r in (0, 1)]
    assert errors[0]["unwritable"].startswith("FileExistsError") and "a_file" in errors[0]["unwritable"]  # rank 0's own error
    assert errors[1]["unwritable"].startswith("DistributedError: rank 0 could not write checkpoint")
    for rank in (0, 1):
        assert errors[rank]["sharded loader"].startswith("KilnError: fit: a step with tensor-parallel layers takes the whole batch on every rank")
    assert not list(tmp_path.glob("**/.*.tmp"))  # no temporary file left behind


def test_fit_resumes_from_a_folder_only_rank_0_sees(tensor_parallel_failures_run):
    """Each rank names its own checkpoint folder: rank 0 chooses the checkpoint, reads it and sends it to rank 1, whose
    folder does not exist. (It used to be refused: every rank read the folder itself.)"""
    tmp_path = tensor_parallel_failures_run
    reports = [_report(tmp_path, "failures", r) for r in (0, 1)]
    for report in reports:
        assert "first unshared" not in report["errors"] and "unshared resume" not in report["errors"]
        assert report["histories"]["unshared"] == report["histories"]["uninterrupted"] == reports[0]["histories"]["uninterrupted"]
        assert [r["step"] for r in report["histories"]["unshared"]["steps"]] == list(range(1, 2 * BATCHES + 1))
    assert not (tmp_path / "unshared1").exists()
    written = [path.rsplit("/", 1)[1] for path in reports[0]["writes"] if "/unshared0/" in path]
    assert written == [f"checkpoint-{update:08d}.npz" for update in (3, 5, 6, 9, 10)]  # epoch 1, then the resume from update 5


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
