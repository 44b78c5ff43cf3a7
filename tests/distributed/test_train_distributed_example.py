"""examples/train_distributed.py runs on 2 MPI ranks in both modes."""

from __future__ import annotations

from pathlib import Path

import kiln

from mpi_launch import run_mpi

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "train_distributed.py")


def test_data_parallel_example_trains_and_rank0_checkpoints(tmp_path):
    checkpoint = tmp_path / "run.npz"
    result = run_mpi(EXAMPLE, "--epochs", "3", "--checkpoint", str(checkpoint), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "held-out accuracy" in result.stdout and checkpoint.exists()
    losses = [float(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_pipeline_example_puts_one_stage_on_each_rank(tmp_path):
    checkpoint = tmp_path / "pipeline.npz"
    result = run_mpi(EXAMPLE, "--mode", "pipeline", "--epochs", "2", "--checkpoint", str(checkpoint), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "rank 0: stage 0 holds fc1.weight, fc1.bias (" in result.stdout
    assert "rank 1: stage 1 holds fc2.weight" in result.stdout
    saved = kiln.load(str(checkpoint))  # one file with both stages' parameters and optimizer state
    assert {f"fc{i}.{kind}" for i in range(1, 5) for kind in ("weight", "bias")} == set(saved["model"]) == set(saved["optimizer"]["state"])
