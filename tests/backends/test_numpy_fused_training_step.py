"""The W1 training step as the NumPy backend runs it: kernel counts after fusion, in-place updates, the code cache,
and training parity with the plain (unfused, unplanned) backend."""

from __future__ import annotations

import collections

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.ops.registry import has_trait

from kiln.backends.numpy import NumpyBackend
from kiln.runtime.train_step import DEFAULT_PIPELINE


def mlp(in_features: int = 784) -> nn.Module:
    return nn.Sequential([nn.Linear(in_features, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)])


def compiled_w1(pipeline: str = DEFAULT_PIPELINE, seed: int = 0):
    kiln.manual_seed(seed)
    model = mlp()
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.01), pipeline=pipeline, verify_each=True)
    rng = np.random.default_rng(seed)
    x, y = rng.random((128, 784), dtype=np.float32), rng.integers(0, 10, 128)
    return model, step, x, y


def kernels(graph: kiln.Graph) -> collections.Counter:
    """Ops that run a computation: not constants, not views."""
    return collections.Counter(op.name for op in graph.ops if op.name != "tensor.constant" and not has_trait(op.name, "movement"))


def lowered(step) -> kiln.Graph:
    """The graph the backend generated code for (after its own decomposition and fusion)."""
    return list(step.compiled.values())[-1].executable.graph


def test_w1_step_after_fusion_has_few_kernels():
    _, step, x, y = compiled_w1()
    step(x, y)
    assert sum(op.name == "optim.sgd_update" for op in step.graph.ops) == 6, "the printed step keeps one update per parameter"
    counts = kernels(lowered(step))
    assert counts["fused.matmul"] == 6, counts  # three dense layers (+bias, +relu), three weight gradients + SGD update
    assert counts["tensor.matmul"] == 2, counts  # the two input gradients
    assert counts["fused.elementwise"] == 5, counts  # relu backward + bias gradient (x2), bias updates (x3)
    assert counts["nn.cross_entropy"] == counts["nn.cross_entropy_grad"] == 1, counts  # one kernel computes both
    assert not any(name.startswith("optim.") or name in ("tensor.add", "tensor.relu", "tensor.where") for name in counts), counts
    assert sum(counts.values()) <= 17, counts
    assert sum(kernels(step.graph).values()) >= 1.5 * sum(counts.values()), "before the backend's fusion the step has half again as many kernels"


def test_parameters_are_updated_in_place_by_the_generated_code():
    model, step, x, y = compiled_w1()
    weights = [p.data for p in model.parameters()]
    before = [w.copy() for w in weights]
    step(x, y)
    source = list(step.compiled.values())[-1].executable.source
    assert "return (v_loss, v_0_weight, v_0_bias, v_2_weight, v_2_bias, v_4_weight, v_4_bias, )" in source
    assert "np.subtract(v_0_weight, " in source and "out=v_0_weight)" in source
    for param, array, old in zip(model.parameters(), weights, before):
        assert param.data is array and not np.array_equal(array, old)


def test_the_same_model_compiles_to_cached_code():
    from kiln.backends.numpy import codegen

    _, first, x, y = compiled_w1()
    first(x, y)
    entries = len(codegen._CODE_CACHE)
    _, second, _, _ = compiled_w1()
    second(x, y)
    assert len(codegen._CODE_CACHE) == entries
    assert list(first.compiled.values())[-1].executable.source == list(second.compiled.values())[-1].executable.source


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fused_planned_step_trains_like_the_plain_backend(optimizer: str, monkeypatch):
    losses, finals = [], []
    for planned in (False, True):
        monkeypatch.setattr(NumpyBackend, "plan_memory", planned)
        kiln.manual_seed(0)
        model = mlp(64)
        opt = kiln.optim.SGD(model.parameters(), lr=0.1) if optimizer == "sgd" else kiln.optim.Adam(model.parameters(), lr=1e-3)
        step = kiln.compile_train_step(model, F.cross_entropy, opt, pipeline="cse,dce" if not planned else DEFAULT_PIPELINE)
        rng = np.random.default_rng(0)
        batches = [(rng.random((32, 64), dtype=np.float32), rng.integers(0, 10, 32)) for _ in range(3)]
        losses.append([step(x, y) for _ in range(5) for x, y in batches] + [step(batches[0][0][:7], batches[0][1][:7])])
        finals.append([p.data.copy() for p in model.parameters()])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    for fused, plain in zip(*finals):
        np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-6)
