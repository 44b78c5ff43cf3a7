"""kiln.parity: one graph on every backend, largest difference per output, first diverging op."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.onnx.lowering import ONNX
from oracles import require


def step_graph_and_feeds():
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 8)).astype(np.float32), rng.integers(0, 4, 5)
    step(x, y)
    graph = step.graph
    params = [p.data.copy() for p in model.parameters()]
    return graph, [x, y, *params, np.float32(0.1)]


def test_backends_agree_on_a_training_step():
    require("onnxruntime")
    graph, feeds = step_graph_and_feeds()
    report = kiln.parity(graph, feeds)
    assert report.ok, str(report)
    assert set(report.differences) == {"onnxruntime"}
    assert len(report.differences["onnxruntime"]) == len(graph.outputs)
    assert max(report.differences["onnxruntime"]) < 1e-5
    assert "parity against numpy" in str(report)


def test_parity_of_a_training_step_leaves_its_state_alone():
    require("onnxruntime")
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x, y = np.ones((3, 8), np.float32), np.array([0, 1, 2])
    assert kiln.parity(step, [x, y]).ok
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_a_wrong_lowering_is_traced_to_the_first_diverging_op(monkeypatch):
    require("onnxruntime")
    graph, feeds = step_graph_and_feeds()
    monkeypatch.setitem(ONNX.kernels, "tensor.tanh", lambda ctx, op, inputs: [ctx.node("Sigmoid", inputs)])
    report = kiln.parity(graph, feeds, backends=["onnxruntime"])
    assert not report.ok
    assert '"tensor.tanh"' in report.first_divergence.op_text
    assert "first divergence on onnxruntime" in str(report)


def test_a_backend_without_a_lowering_is_reported_not_raised(monkeypatch):
    """An op the backend cannot lower: the report says which backend and why, and parity is not ok."""
    require("onnxruntime")
    graph, feeds = step_graph_and_feeds()
    monkeypatch.delitem(ONNX.kernels, "tensor.tanh")
    report = kiln.parity(graph, feeds, backends=["onnxruntime"])
    assert not report.ok and report.first_divergence is None and set(report.unsupported) == {"onnxruntime"}
    assert "tensor.tanh" in report.unsupported["onnxruntime"]
    assert "onnxruntime  cannot run this graph" in str(report)
