"""Data and pipeline parallelism on 2 MPI ranks against the single-process step; a failing rank ends the job."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F

from dist_models import BATCH, dataset, make_model, make_optimizer, train_conv_bn_single, train_sequence_first, train_single, train_two_layers
from mpi_launch import assert_ran, run_mpi



@pytest.fixture(scope="module")
def data_parallel_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("data_parallel")
    result = run_mpi("dp_parity_worker.py", str(out), timeout=90)
    assert_ran(result)
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


BN_STEPS = 8


def test_data_parallel_batch_norm_uses_the_global_batch_statistics(tmp_path):
    """SyncBatchNorm semantics: 2 ranks with half batches take the 1-process full-batch step, running statistics included."""
    result = run_mpi("dp_batch_norm_worker.py", str(tmp_path), str(BN_STEPS), timeout=90)
    assert_ran(result)
    for layer in ("bn1", "bn2"):  # the per-channel sums (with the count) and the centered squares cross the ranks
        assert f'%{layer}.batch_totals = "comm.allreduce"' in result.stdout and f'%{layer}.batch_squares = "comm.allreduce"' in result.stdout
    assert '"nn.batch_norm"' not in result.stdout  # no op left normalizing with one shard's statistics
    reference = train_conv_bn_single(BN_STEPS)
    ranks = [np.load(tmp_path / f"bn_rank{r}.npz") for r in (0, 1)]
    assert set(reference) >= {"bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"}
    for name, expected in reference.items():
        np.testing.assert_allclose(ranks[0][name], expected, rtol=1e-5, err_msg=f"rank 0 {name} differs from the full-batch step")
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=f"ranks disagree on {name}")


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    assert_ran(run_mpi("pp_parity_worker.py", str(out), "float32", "20", timeout=60))
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


def test_pipeline_parallel_splits_sequence_first_micro_batches_along_batch_dim(pipeline_run):
    """``batch_dim=1``: each ``(L, N, F)`` batch is cut into micro-batches along N, as ``TrainStep(batch_dim=1,
    accumulate=4)`` cuts it (along L, of size 2, it would not split into 4)."""
    reference = train_sequence_first()
    for rank, names in {0: ("fc1.weight", "fc2.bias"), 1: ("fc3.weight", "fc4.bias")}.items():
        saved = np.load(pipeline_run / f"sequence_first_rank{rank}.npz")
        np.testing.assert_allclose(saved["losses"], reference["losses"], rtol=1e-5)
        for name in names:
            np.testing.assert_allclose(saved[name], reference[name], rtol=1e-5, atol=1e-7, err_msg=f"rank {rank} {name}")


def test_a_combined_optimizer_trains_under_both_parallelisms(tmp_path):
    """Muon + AdamW (kiln.optim.Combined) on 2 ranks: the pipeline matches one process with accumulate=4, data
    parallelism one process with the full batch."""
    assert_ran(run_mpi("combined_optimizer_worker.py", str(tmp_path), "5", timeout=90))
    saved = np.load(tmp_path / "combined.npz")
    for accumulate, key in ((4, "pipeline"), (1, "data_parallel")):
        model = make_model(0)
        parameters = list(model.parameters())
        step = kiln.compile_train_step(model, F.cross_entropy, [kiln.optim.Muon([p for p in parameters if p.ndim == 2], lr=0.02),
                                                               kiln.optim.AdamW([p for p in parameters if p.ndim != 2], lr=1e-2)],
                                       accumulate=accumulate)
        x, y = dataset()
        losses = [step(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]) for k in range(5)]
        np.testing.assert_allclose(saved[key], losses, rtol=1e-5, err_msg=key)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(saved[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


RESUME_AT, MORE = 6, 4


@pytest.fixture(scope="module")
def pipeline_checkpoint_run(tmp_path_factory):
    """Two mpiexec runs: train and save, then load into fresh pipelines and go on."""
    out = tmp_path_factory.mktemp("pipeline_checkpoint")
    assert_ran(run_mpi("pp_checkpoint_worker.py", "train", str(out), str(RESUME_AT), str(MORE), timeout=90))
    resumed = run_mpi("pp_checkpoint_worker.py", "resume", str(out), str(RESUME_AT), str(MORE), timeout=90)
    assert_ran(resumed)
    return out, resumed.stdout


def _flat(tree, prefix=""):
    """``{"model/fc1.weight": array, "optimizer/state/fc1.weight/exp_avg": array, "optimizer/step": 10, ...}``."""
    if isinstance(tree, dict):
        return {key: value for name, child in tree.items() for key, value in _flat(child, f"{prefix}{name}/").items()}
    if isinstance(tree, list):
        return {key: value for index, child in enumerate(tree) for key, value in _flat(child, f"{prefix}{index}/").items()}
    return {prefix.rstrip("/"): tree}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pipeline_checkpoint_resumes_bit_for_bit(pipeline_checkpoint_run, optimizer):
    """N steps, save, load in a new mpiexec run, M steps == N + M steps uninterrupted: parameters, state and losses."""
    out, _ = pipeline_checkpoint_run
    full, resumed = _flat(kiln.load(out / f"{optimizer}_full.npz")), _flat(kiln.load(out / f"{optimizer}_resumed.npz"))
    assert set(full) == set(resumed) and full["optimizer/step"] == RESUME_AT + MORE
    states = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq")}[optimizer]
    for layer in ("fc1", "fc4"):  # one file holds both stages: parameters and optimizer state of each
        assert all(f"optimizer/state/{layer}.weight/{state}" in full for state in states)
    for key, value in full.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=f"{optimizer}: {key} differs after the resume")
    for rank in (0, 1):
        uninterrupted = np.load(out / f"{optimizer}_train_losses_rank{rank}.npy")
        np.testing.assert_array_equal(np.load(out / f"{optimizer}_resume_losses_rank{rank}.npy"), uninterrupted[RESUME_AT:])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pipeline_checkpoint_is_a_train_step_checkpoint(pipeline_checkpoint_run, optimizer):
    """The gathered file equals the single-process step with accumulation after N steps, and TrainStep.load resumes from it."""
    out, _ = pipeline_checkpoint_run
    reference = train_single(optimizer, "float64", accumulate=4, steps=RESUME_AT)
    saved = kiln.load(out / f"{optimizer}_after_n.npz")
    for name, value in saved["model"].items():
        np.testing.assert_allclose(value, reference[name], rtol=1e-5, err_msg=f"{optimizer}: {name}")
    model = make_model(seed=3, dtype="float64")
    step = kiln.compile_train_step(model, F.cross_entropy, make_optimizer(optimizer, model), accumulate=4)
    step.load(str(out / f"{optimizer}_after_n.npz"))
    x, y = dataset(dtype="float64")
    for k in range(RESUME_AT, RESUME_AT + MORE):
        step(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH])
    full = kiln.load(out / f"{optimizer}_full.npz")
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, full["model"][name], rtol=1e-5, err_msg=f"{optimizer}: {name} after TrainStep resumed")


def test_pipeline_checkpoint_failures_raise_on_every_rank(pipeline_checkpoint_run):
    out, stdout = pipeline_checkpoint_run
    assert "rank 0 load of a missing file: FileNotFoundError" in stdout
    assert "rank 1 load of a missing file: DistributedError: rank 0 could not read" in stdout
    assert "rank 0 save into a missing folder: FileNotFoundError" in stdout
    assert "rank 1 save into a missing folder: DistributedError: rank 0 could not write" in stdout
    assert not list(out.glob("**/.*.tmp"))  # no temporary file left behind


def test_pipeline_load_keeps_each_stages_optimizer_state_only(pipeline_checkpoint_run):
    _, stdout = pipeline_checkpoint_run
    for rank in (0, 1):  # the file brings all 8 parameters' state; once compiled, each rank keeps its stage's 4
        assert all(f"rank {rank} {name}: optimizer state for 4 of 8 parameters" in stdout for name in ("sgd", "adam"))


def test_a_failing_rank_ends_the_job_with_its_error():
    result = run_mpi("fail_worker.py", timeout=30)
    assert result.returncode != 0
    assert "ValueError: rank 1 hit a bad batch on purpose" in result.stderr


def test_tensor_parallel_linear_pair_matches_the_unsplit_model(tmp_path):
    result = run_mpi("tp_parity_worker.py", str(tmp_path), "float32", timeout=60)
    assert_ran(result)
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


def test_fit_of_a_data_parallel_step_checkpoints_on_rank_0_only_and_resumes(tmp_path):
    assert_ran(run_mpi("dp_fit_worker.py", str(tmp_path), timeout=90))
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    assert int(ranks[0]["writes"]) > 0 and int(ranks[1]["writes"]) == 0  # rank 0 writes, rank 1 waits for it
    assert [int(r["epochs"]) for r in ranks] == [3, 3]  # both resumed from rank 0's files and trained on to epoch 3
    assert len(list((tmp_path / "checkpoints").glob("checkpoint-*.npz"))) == 3  # pruned to keep_checkpoints, once
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1)) and sum(r["kind"] == "epoch" for r in records) == 3  # rank 0's log only


def test_a_checkpoint_rank_0_cannot_write_fails_every_rank_without_a_hang(tmp_path):
    assert_ran(run_mpi("dp_fit_worker.py", str(tmp_path), "unwritable", timeout=60))
    errors = [(tmp_path / f"error{r}.txt").read_text() for r in (0, 1)]
    assert "a_file" in errors[0]  # rank 0's own error names the path it could not write
    assert errors[1].startswith("DistributedError: rank 0 could not write checkpoint")


def test_data_parallel_load_reads_rank_0s_file_and_resumes_exactly(tmp_path):
    """Save after 5 steps into a folder only rank 0 has, load in a new job (rank 1 cannot see the file), 5 more steps:
    equal to 10 uninterrupted steps, bit for bit, on both ranks."""
    assert_ran(run_mpi("dp_save_load_worker.py", "save", str(tmp_path), timeout=60))
    assert not (tmp_path / "rank1").exists()
    assert_ran(run_mpi("dp_save_load_worker.py", "load", str(tmp_path), timeout=60))
    for rank in (0, 1):
        uninterrupted, resumed = np.load(tmp_path / f"uninterrupted_rank{rank}.npz"), np.load(tmp_path / f"resumed_rank{rank}.npz")
        assert int(resumed["step"]) == 10
        for name in uninterrupted.files:
            np.testing.assert_array_equal(resumed[name], uninterrupted[name], err_msg=f"rank {rank} {name}")


def test_data_parallel_refuses_a_model_with_tensor_parallel_layers():
    from kiln.distributed import ColumnParallelLinear, DataParallel, DistributedError
    from one_rank import OneRank

    model = kiln.nn.Sequential(ColumnParallelLinear(4, 6, comm=OneRank()), kiln.nn.ReLU(), kiln.nn.Linear(6, 2))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(DistributedError, match="tensor-parallel layers"):
        DataParallel(step, comm=OneRank())
