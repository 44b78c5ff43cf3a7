"""Data and pipeline parallelism on 2 MPI ranks against the single-process step; a failing rank ends the job."""

from __future__ import annotations

import numpy as np
import pytest

import kiln

from dist_models import train_single, train_two_layers
from mpi_launch import run_mpi


def _assert_ran(result) -> None:
    assert result.returncode == 0, f"MPI job failed (exit {result.returncode})\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.fixture(scope="module")
def data_parallel_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("data_parallel")
    result = run_mpi("dp_parity_worker.py", str(out), timeout=90)
    _assert_ran(result)
    return out, result.stdout


# float64 shows the algorithm is exact (rtol 1e-5, no atol); in float32 each rank sums its half of the batch before the
# allreduce adds the halves, a different rounding order, and Adam's g / sqrt(v) magnifies that rounding where g ~ 0,
# so float32 also gets an absolute tolerance of 1e-5 of the largest parameter.
TOLERANCES = {"float64": 0.0, "float32": 1e-5}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_data_parallel_matches_one_process_with_the_full_batch(data_parallel_run, optimizer, dtype):
    out, _ = data_parallel_run
    reference = train_single(optimizer, dtype)
    ranks = [np.load(out / f"{optimizer}_{dtype}_rank{r}.npz") for r in (0, 1)]
    for name, expected in reference.items():
        atol = TOLERANCES[dtype] * np.abs(expected).max()
        np.testing.assert_allclose(ranks[0][name], expected, rtol=1e-5, atol=atol, err_msg=f"{optimizer} {dtype} {name}")
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=f"ranks disagree on {name}")


def test_data_parallel_rank0_writes_the_checkpoint_of_the_shared_state(data_parallel_run):
    out, _ = data_parallel_run
    checkpoint = kiln.load(str(out / "adam_float32_checkpoint.npz"))
    rank0 = np.load(out / "adam_float32_rank0.npz")
    for name, value in checkpoint["model"].items():
        np.testing.assert_array_equal(value, rank0[name])
    assert checkpoint["optimizer"]["step"] == 20


def test_data_parallel_ir_on_the_ranks_has_bucketed_allreduces(data_parallel_run):
    _, stdout = data_parallel_run
    # 16 KiB buckets over 8 float64 gradients (21 KiB) and the loss: 2 allreduces, not 9 per-tensor calls
    assert stdout.count('"comm.allreduce"') == 2
    assert '"tensor.concat"' in stdout and 'op = "mean", world_size = 2' in stdout


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    _assert_ran(run_mpi("pp_parity_worker.py", str(out), "float32", "20", timeout=60))
    return out


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pipeline_parallel_matches_gradient_accumulation(pipeline_run, optimizer):
    tmp_path = pipeline_run
    reference = train_single(optimizer, "float32", accumulate=4)
    stages = {0: {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}, 1: {"fc3.weight", "fc3.bias", "fc4.weight", "fc4.bias"}}
    for rank, names in stages.items():
        saved = np.load(tmp_path / f"{optimizer}_rank{rank}.npz")
        np.testing.assert_allclose(saved["losses"], reference["losses"], rtol=1e-5)
        assert set(saved.files) - {"losses", "parameter_bytes", "state_params"} == names  # the rank holds its stage only
        for name in names:
            np.testing.assert_allclose(saved[name], reference[name], rtol=1e-5, atol=1e-7, err_msg=f"rank {rank} {name}")
        states = 1 if optimizer == "sgd" else 2  # momentum buffer; exp_avg and exp_avg_sq
        stage_bytes = sum(reference[name].nbytes for name in names)
        assert int(saved["state_params"]) == len(names)  # optimizer state exists for this stage's parameters only
        assert int(saved["parameter_bytes"]) == stage_bytes * (1 + states)
        ir = (tmp_path / f"{optimizer}_rank{rank}.ir").read_text()
        other = stages[1 - rank]
        assert all(f"%{name}:" in ir for name in names) and not any(f"%{name}" in ir for name in other)


def test_a_failing_rank_ends_the_job_with_its_error():
    result = run_mpi("fail_worker.py", timeout=30)
    assert result.returncode != 0
    assert "ValueError: rank 1 hit a bad batch on purpose" in result.stderr


def test_tensor_parallel_linear_pair_matches_the_unsplit_model(tmp_path):
    result = run_mpi("tp_parity_worker.py", str(tmp_path), "float32", timeout=60)
    _assert_ran(result)
    assert '"comm.replicate"' in result.stdout and 'op = "sum", world_size = 2' in result.stdout
    ranks = [np.load(tmp_path / f"tp_rank{r}.npz") for r in (0, 1)]
    joined = {
        "fc1.weight": np.concatenate([r["fc1.weight"] for r in ranks], axis=0),  # column split: output rows
        "fc1.bias": np.concatenate([r["fc1.bias"] for r in ranks]),
        "fc2.weight": np.concatenate([r["fc2.weight"] for r in ranks], axis=1),  # row split: input columns
        "fc2.bias": ranks[0]["fc2.bias"],
    }
    np.testing.assert_array_equal(ranks[0]["fc2.bias"], ranks[1]["fc2.bias"])
    reference = train_two_layers(steps=10)
    np.testing.assert_allclose(ranks[0]["losses"], reference["losses"], rtol=1e-5)
    for name, value in joined.items():
        np.testing.assert_allclose(value, reference[name], rtol=1e-5, atol=1e-7, err_msg=name)
