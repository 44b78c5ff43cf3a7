"""The benchmark's workloads compute what they claim (no timing here: performance lives in benchmarks/)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from oracles import require

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks"))
import cnn_workload  # noqa: E402
import gpt_workload  # noqa: E402
import lstm_workload  # noqa: E402
import train_step as benchmark  # noqa: E402


def test_w4_in_kiln_and_torch_takes_the_same_steps():
    require("torch")
    config = gpt_workload.GPTConfig(batch=4)
    model, step = gpt_workload.kiln_gpt(config)
    x, y = gpt_workload.gpt_batch(config)
    torch_step = gpt_workload.torch_gpt_step(model, config, threads=1)
    for _ in range(3):
        np.testing.assert_allclose(step(x, y), float(torch_step().detach()), rtol=1e-5)


def test_w5_in_kiln_and_torch_takes_the_same_steps():
    """The CNN from the same weights, SGD with momentum: the same losses step by step; the FLOP count is the layers'."""
    require("torch")
    config = cnn_workload.CNNConfig(batch=16)
    model, step = cnn_workload.kiln_cnn(config)
    x, y = cnn_workload.cnn_batch(config)
    torch_step = cnn_workload.torch_cnn_step(model, config, threads=1)
    for _ in range(3):
        np.testing.assert_allclose(float(step(x, y)), float(torch_step().detach()), rtol=1e-5)
    n = config.batch
    forward = 2 * n * (64 * 16 * 9 + 16 * 32 * 144 + 128 * 10)
    assert cnn_workload.cnn_flops(config) == 3 * forward - 2 * n * 64 * 16 * 9


def test_w6_in_kiln_and_torch_takes_the_same_steps():
    """The LSTM language model from the same weights, Adam: the same losses step by step (a short sequence keeps the
    unrolled graph small); the FLOP count is the gates' and the head's matmuls, 3x the forward's."""
    require("torch")
    config = lstm_workload.LSTMConfig(batch=4, length=6, hidden=16)
    model, step = lstm_workload.kiln_lstm(config)
    x, y = lstm_workload.lstm_batch(config)
    torch_step = lstm_workload.torch_lstm_step(model, config, threads=1)
    for _ in range(3):
        np.testing.assert_allclose(float(step(x, y)), float(torch_step().detach()), rtol=1e-5)
    tokens, gates = 4 * 6, 4 * 16
    forward = 2 * tokens * gates * ((32 + 16) + (16 + 16)) + 2 * tokens * 16 * 64
    assert lstm_workload.lstm_flops(config) == 3 * forward


@pytest.mark.parametrize("name", ["W1", "W3"])
def test_the_memory_plan_keeps_under_70_percent_of_one_allocation_per_value(name):
    workload = benchmark.WORKLOADS[name]
    _, _, step = benchmark.kiln_step(workload, benchmark.DEFAULT_PIPELINE)
    memory = benchmark.memory_bytes(step, workload.batch)
    assert memory["peak"] <= memory["pooled"] <= 0.7 * memory["unplanned"], memory


def test_compile_phases_name_every_phase_and_count_ops():
    phases = gpt_workload.compile_phases(gpt_workload.GPTConfig(layers=1))
    assert phases["ops"] > phases["lowered_ops"] > 0
    assert phases["total_s"] >= phases["trace_s"] + phases["passes_s"] + phases["backend_s"] - 1e-9


def test_the_cpu_profile_accounts_for_every_op_of_the_cnn_step():
    """benchmarks/cpu_profile.py on W5: one time per op of the lowered step, summed by kind; the profiling switch is
    off again once the step is built."""
    import cpu_profile

    run, executable = cpu_profile.profiled_step("W5")
    times = cpu_profile.median_times(run, executable, steps=2, warmup=1)
    assert len(times) == len(executable.graph.ops) and "KILN_NUMPY_PROFILE" not in os.environ
    lines = cpu_profile.report(times, top=len(times))  # every kind and op listed: which rank first is timing, not tested
    assert lines[0].startswith("step: ") and any("tensor.max_pool2d_grad" in line for line in lines)
    assert any(line.strip().endswith("tensor.conv2d_columns") for line in lines)
