"""Distributed checkpoints, on 2 MPI ranks: ``step.save`` / ``step.load`` of a step with tensor-parallel layers (one
unsplit file, written by rank 0), and ``kiln.fit`` resuming from a checkpoint folder only rank 0 sees (data, pipeline
and tensor parallelism)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.runtime.distributed.tensor_parallel import shard

from ckpt_rank0_folder_worker import CRASH_AT, EPOCHS, KINDS
from ckpt_tp_save_worker import MORE, SAVE_AT
from dist_models import BATCH, dataset
from fit_checks import read_report
from mpi_launch import assert_ran, run_mpi
from test_tp_fit import RANKS, SPLIT_AXES, _joined, _shards, _single_process_step

# --- step.save / step.load with tensor-parallel layers -------------------------------------------------


def _trained_single_process_file(path) -> dict:
    """A file ``step.save`` of the unsplit ``MLP2`` writes after 2 updates (other values than the split run's); its tree."""
    _, step = _single_process_step(seed=7)
    x, y = dataset()
    for k in range(2):
        step(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH])
    step.save(str(path))
    return kiln.load(path)


@pytest.fixture(scope="module")
def tensor_parallel_save_run(tmp_path_factory):
    """A job that trains, saves, trains on (and saves where rank 0 cannot write); then a new job that loads and trains on."""
    out = tmp_path_factory.mktemp("tensor_parallel_save")
    assert_ran(run_mpi("ckpt_tp_save_worker.py", "save", str(out), timeout=60))
    _trained_single_process_file(out / "single.npz")
    assert_ran(run_mpi("ckpt_tp_save_worker.py", "load", str(out), timeout=60))
    return out


def test_a_tensor_parallel_step_saved_and_loaded_in_a_new_job_trains_on_bit_for_bit(tensor_parallel_save_run):
    out = tensor_parallel_save_run
    uninterrupted, resumed = _shards(out, "uninterrupted"), _shards(out, "resumed")
    for rank in range(RANKS):
        assert int(resumed[rank]["step"]) == int(uninterrupted[rank]["step"]) == SAVE_AT + MORE
        assert set(resumed[rank]) == set(uninterrupted[rank])
        for key, value in uninterrupted[rank].items():
            np.testing.assert_array_equal(resumed[rank][key], value, err_msg=f"rank {rank}: {key} after step.load in a new job")
        assert read_report(out, "load", rank)["losses"] == read_report(out, "save", rank)["losses"]


def test_a_tensor_parallel_step_save_is_one_unsplit_file_written_by_rank_0(tensor_parallel_save_run):
    out = tensor_parallel_save_run
    assert read_report(out, "save", 0)["writes"][0] == str(out / "step.npz")  # then the attempt into a_file
    assert read_report(out, "save", 1)["writes"] == [] and read_report(out, "load", 1)["writes"] == []
    assert not list(out.glob("**/.*.tmp"))  # written atomically: no temporary file left behind
    saved = _shards(out, "saved")
    tree = kiln.load(out / "step.npz")
    for name, value in tree["model"].items():  # the joined shards, parameters and optimizer state alike
        np.testing.assert_array_equal(value, _joined(saved, name), err_msg=name)
        for key, state in tree["optimizer"]["state"][name].items():
            np.testing.assert_array_equal(state, _joined(saved, f"{name}.{key}"), err_msg=f"{name}.{key}")
    assert tree["optimizer"]["step"] == SAVE_AT

    model, step = _single_process_step(seed=3)  # the unsplit model's step loads it as its own
    step.load(str(out / "step.npz"))
    assert step.optimizer.step_count == SAVE_AT
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, _joined(saved, name), err_msg=f"{name} in the unsplit model")


def test_a_tensor_parallel_step_file_has_the_single_process_format_both_ways(tensor_parallel_save_run):
    out = tensor_parallel_save_run
    split, single = kiln.load(out / "step.npz"), kiln.load(out / "single.npz")

    def layout(tree):
        return {
            "model": {name: (a.shape, a.dtype) for name, a in tree["model"].items()},
            "state": {name: {key: (a.shape, a.dtype) for key, a in s.items()} for name, s in tree["optimizer"]["state"].items()},
            "rest": {key: value for key, value in tree["optimizer"].items() if key not in ("state", "step")},
        }

    assert layout(split) == layout(single)
    from_single = _shards(out, "from_single")  # the split step loaded the single-process file: each rank its shard
    for rank in range(RANKS):
        for name, value in single["model"].items():
            expected = shard(value, SPLIT_AXES[name], rank, RANKS) if name in SPLIT_AXES else value
            np.testing.assert_array_equal(from_single[rank][name], expected, err_msg=f"rank {rank}: {name}")
            for key, state in single["optimizer"]["state"][name].items():
                expected = shard(state, SPLIT_AXES[name], rank, RANKS) if name in SPLIT_AXES else state
                np.testing.assert_array_equal(from_single[rank][f"{name}.{key}"], expected, err_msg=f"rank {rank}: {name}.{key}")
        assert int(from_single[rank]["step"]) == single["optimizer"]["step"] == 2


def test_tensor_parallel_step_save_and_load_failures_raise_on_every_rank(tensor_parallel_save_run):
    out = tensor_parallel_save_run
    saves, loads = [read_report(out, "save", r)["errors"] for r in (0, 1)], [read_report(out, "load", r)["errors"] for r in (0, 1)]
    assert saves[0]["unwritable"].startswith("NotADirectoryError") and "a_file" in saves[0]["unwritable"]  # rank 0's own error
    assert saves[1]["unwritable"].startswith(f"DistributedError: rank 0 could not write {out / 'a_file' / 'step.npz'}")
    assert loads[0]["missing"].startswith("FileNotFoundError") and "missing.npz" in loads[0]["missing"]
    assert loads[1]["missing"].startswith(f"DistributedError: rank 0 could not read {out / 'missing.npz'}")


# --- kiln.fit resuming from a folder only rank 0 sees --------------------------------------------------


@pytest.fixture(scope="module")
def rank0_folder_run(tmp_path_factory):
    """Per kind: an uninterrupted fit and one into per-rank folders that crashes; then, in a new job, the resume."""
    out = tmp_path_factory.mktemp("rank0_folder")
    assert_ran(run_mpi("ckpt_rank0_folder_worker.py", "first", str(out), timeout=120))
    assert not any((out / kind / "rank1").exists() for kind in KINDS)  # rank 1 never made its folder
    assert_ran(run_mpi("ckpt_rank0_folder_worker.py", "resume", str(out), timeout=120))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_fit_resumes_from_a_checkpoint_folder_only_rank_0_sees(rank0_folder_run, kind):
    out = rank0_folder_run
    for rank in range(RANKS):
        assert read_report(out, "first", rank)["errors"][f"{kind} crash"] == f"Crash: crash at update {CRASH_AT}"
        full = read_report(out, "first", rank)["histories"][f"{kind} full"]
        assert read_report(out, "resume", rank)["histories"][f"{kind} resumed"] == full, f"rank {rank}: the resumed history differs"
        assert [r["step"] for r in full["steps"]] == list(range(1, EPOCHS * 5 + 1))
    assert list((out / kind / "rank1").iterdir()) == []  # rank 1's folder stayed empty: it resumed from rank 0's file
    assert (out / kind / "rank0" / "checkpoint-00000006.npz").exists()  # the one the resume started from
    for rank in range(1 if kind == "pipeline" else RANKS):  # a pipeline's whole state is on rank 0 only
        full, resumed = np.load(out / f"{kind}_full_rank{rank}.npz"), np.load(out / f"{kind}_resumed_rank{rank}.npz")
        assert set(resumed) == set(full) and int(full["step"]) == EPOCHS * 5
        for key in full:
            np.testing.assert_array_equal(resumed[key], full[key], err_msg=f"{kind}, rank {rank}: {key}")
    assert not list(out.glob("**/.*.tmp"))
