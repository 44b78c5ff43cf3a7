"""The whole training step as a plain ONNX file that is also a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from oracles import require


def make(optimizer: str):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd" else kiln.optim.Adam(model.parameters(), lr=1e-3)
    return model, kiln.compile_train_step(model, F.cross_entropy, opt)


def batches(count, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((16, 64)).astype(np.float32), rng.integers(0, 10, 16)) for _ in range(count)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_exported_step_is_standard_onnx_and_runs_with_the_batch_alone(tmp_path, optimizer):
    onnx, ort = require("onnx"), require("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    model, step = make(optimizer)
    first, second = batches(2)
    step(*first)
    path = str(tmp_path / "train.onnx")
    proto = kiln.export_onnx_train_step(step, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    assert {node.domain for node in proto.graph.node} <= {""}
    feeds = {"x": second[0], "target": second[1]} if proto.graph.input[0].name == "x" else {"input": second[0], "target": second[1]}
    ort_loss = ort.InferenceSession(path).run(None, feeds)[0]
    reference_loss = ReferenceEvaluator(proto).run(None, feeds)[0]
    loss = step(*second)
    np.testing.assert_allclose(ort_loss, loss, rtol=1e-5)
    np.testing.assert_allclose(reference_loss, loss, rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_loading_the_file_resumes_training_exactly(tmp_path, optimizer, backend):
    require("onnxruntime")
    model, step = make(optimizer)
    data = batches(20)
    for batch in data[:10]:
        step(*batch)
    path = str(tmp_path / "train.onnx")
    kiln.export_onnx_train_step(step, path)
    expected = [step(*batch) for batch in data[10:]]
    resumed = kiln.load_onnx_train_step(path, backend=backend)
    assert resumed.step_count == 10
    got = [resumed(*batch) for batch in data[10:]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(resumed.parameters()[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_loading_a_plain_model_as_a_training_step_is_a_clear_error(tmp_path):
    require("onnx")
    path = str(tmp_path / "plain.onnx")
    kiln.export_onnx(nn.Sequential(nn.Linear(3, 2)), [kiln.TensorSpec(("N", 3))], path)
    with pytest.raises(kiln.KilnError, match="not a kiln training step"):
        kiln.load_onnx_train_step(path)
