"""A profiling build of the NumPy backend (``NumpyBackend(profile=True)``, ``KILN_NUMPY_PROFILE=1``): the wall time of
every op of the lowered graph in the last call; the default build times nothing."""

from __future__ import annotations

import time

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, DType, Graph, TensorType


def _graph() -> Graph:
    graph = Graph("tiny")
    x = graph.add_input(TensorType(("N", 64), DType.f32), "x")
    b = Builder(graph)
    graph.outputs = [b.reduce_sum(b.relu(b.matmul(x, b.transpose(x))), axes=(1,), keepdims=False)]
    return graph


def test_a_profiling_build_times_every_op_and_computes_the_same():
    profiled, plain = NumpyBackend(profile=True).compile(_graph()), NumpyBackend().compile(_graph())
    x = np.random.default_rng(0).standard_normal((400, 64)).astype(np.float32)
    start = time.perf_counter()
    (got,) = profiled(x)
    wall_ms = 1e3 * (time.perf_counter() - start)
    np.testing.assert_array_equal(got, plain(x)[0])
    times = profiled.op_times()
    assert [t.op for t in times] == list(profiled.graph.ops) and all(t.ms >= 0 for t in times)
    assert 0 < sum(t.ms for t in times) <= wall_ms
    matmul = next(t for t in times if "tensor.matmul" in (t.op.attrs.get("ops") or (t.op.name,)))
    assert matmul.ms > 0  # a 400x400x64 product takes measurable time


def test_the_default_build_times_nothing_and_says_how_to_ask():
    executable = NumpyBackend().compile(_graph())
    assert "_clock" not in executable.source and executable.op_seconds is None
    with pytest.raises(RuntimeError, match="KILN_NUMPY_PROFILE=1"):
        executable.op_times()


def test_the_environment_variable_profiles_a_training_step(monkeypatch):
    monkeypatch.setenv("KILN_NUMPY_PROFILE", "1")
    model = nn.Sequential([nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)])
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    rng = np.random.default_rng(0)
    step(rng.standard_normal((32, 8)).astype(np.float32), rng.integers(0, 3, 32))
    (compiled,) = step.compiled.values()
    times = compiled.executable.op_times()
    assert len(times) == len(compiled.executable.graph.ops) and sum(t.ms for t in times) > 0
