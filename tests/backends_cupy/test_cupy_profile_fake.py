"""A profiling build of the CuPy backend (``CupyBackend(profile=True)``) on the NumPy stand-in: a CUDA event after every
op, and ``op_times`` reading one time per op of the lowered graph; the default build records nothing."""

from __future__ import annotations

import pytest

from cupy_models import MODELS, step_for
from kiln.backends.cupy import CupyBackend
from kiln.compiler.ir import Builder, DType, Graph, TensorType


def _compiled(profile: bool):
    graph = Graph("tiny")
    x = graph.add_input(TensorType((4, 3), DType.f32), "x")
    graph.outputs = [Builder(graph).op("tensor.relu", Builder(graph).op("tensor.exp", x))]
    return CupyBackend(profile=profile).compile(graph)


def test_a_profiling_build_times_every_op_of_the_lowered_graph(fake):
    import numpy as np

    executable = _compiled(profile=True)
    executable(np.ones((4, 3), np.float32))
    times = executable.op_times()
    assert [t.op for t in times] == list(executable.graph.ops) and all(t.ms >= 0 for t in times)
    assert executable.source.count("_op_events[") == len(executable.graph.ops) + 1


def test_the_default_build_records_no_events_and_says_how_to_get_them(fake):
    executable = _compiled(profile=False)
    assert "_op_events" not in executable.source and executable.op_events is None
    with pytest.raises(RuntimeError, match="KILN_CUPY_PROFILE=1"):
        executable.op_times()


def test_a_training_step_profiled_through_the_environment_still_trains_as_numpy(fake, monkeypatch):
    """``KILN_CUPY_PROFILE=1`` reaches steps compiled with ``backend="cupy"``; the events change nothing computed."""
    import numpy as np

    monkeypatch.setenv("KILN_CUPY_PROFILE", "1")
    losses = {}
    for backend in ("numpy", "cupy"):
        model, step, rng = step_for("gpt", backend)
        losses[backend] = [float(step(*MODELS["gpt"][1](rng))) for _ in range(2)]
    executable = list(step.compiled.values())[-1].executable
    assert len(executable.op_times()) == len(executable.graph.ops) > 100
    np.testing.assert_allclose(losses["cupy"], losses["numpy"], rtol=1e-5)
