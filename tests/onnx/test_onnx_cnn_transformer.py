"""ONNX export of CNNs and transformer blocks: native ops (Conv, MaxPool, LayerNormalization, Gelu), and
training steps whose backward (conv and pool gradients, embedding scatter-add) runs in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.onnx.export import graph_to_onnx
from oracles import require


def cnn():
    kiln.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6, 10),
    )


def test_cnn_inference_export_uses_native_ops_and_matches_numpy(tmp_path):
    onnx, ort = require("onnx"), require("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    model = cnn()
    path = str(tmp_path / "cnn.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 1, 8, 8))], path)
    onnx.checker.check_model(proto, full_check=True)
    types = {node.op_type for node in proto.graph.node}
    assert {"Conv", "MaxPool", "AveragePool"} <= types
    session, reference, predict = ort.InferenceSession(path), ReferenceEvaluator(proto), kiln.compile(model)
    for batch in (1, 3, 8):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8)).astype(np.float32)
        expected = predict(x)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(reference.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (3, 1, 2, 1), (1, 1, 1, 2), (2, 0, 2, 4)])
def test_conv_gradients_lower_to_onnx_exactly(stride, padding, dilation, groups):
    """Grouped convolutions too (4 groups of one channel: depthwise): the weight gradient is one convolution per group."""
    require("onnxruntime")
    kiln.manual_seed(1)
    layer = nn.Conv2d(4, 4 * (1 + (groups == 2)), 3, stride=stride, padding=padding, dilation=dilation, groups=groups)
    model = nn.Sequential(layer, nn.Flatten())

    def loss(out, target):
        return F.mse_loss(out, target)

    x = np.random.default_rng(2).standard_normal((2, 4, 9, 9)).astype(np.float32)
    target = kiln.compile(model)(x) * 0.5
    step = kiln.compile_train_step(model, loss, kiln.optim.SGD(model.parameters(), lr=0.1))
    assert kiln.parity(step, [x, target], backends=["onnxruntime"]).ok


def test_embedding_layer_norm_gelu_block_exports_and_trains_in_onnxruntime():
    onnx = require("onnx")
    require("onnxruntime")
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Embedding(11, 8), nn.LayerNorm(8), nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 11))

    def loss(logits, target):
        return F.cross_entropy(logits.transpose(1, 2), target)  # PyTorch layout: (N, C, L)

    tokens = np.random.default_rng(0).integers(0, 11, (4, 5))
    step = kiln.compile_train_step(model, loss, kiln.optim.SGD(model.parameters(), lr=0.1))
    assert kiln.parity(step, [tokens, (tokens + 1) % 11], backends=["onnxruntime"]).ok
    proto = graph_to_onnx(step.compile(kiln.TensorSpec(("N", 5), "int64"), kiln.TensorSpec(("N", 5), "int64")).graph)
    onnx.checker.check_model(proto, full_check=True)
    types = {node.op_type for node in proto.graph.node}
    assert {"LayerNormalization", "Gelu", "Gather", "ScatterElements"} <= types


def tiny_gpt():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples"))
    from gpt_tiny import GPT

    kiln.manual_seed(0)
    return GPT(vocab_size=13, context=6, d_model=16, heads=2, layers=2)


def test_tiny_gpt_inference_export_matches_numpy_at_several_batch_sizes(tmp_path):
    onnx, ort = require("onnx"), require("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    model = tiny_gpt().eval()
    path = str(tmp_path / "gpt.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 6), "int64")], path)
    onnx.checker.check_model(proto, full_check=True)
    assert {"LayerNormalization", "Gelu", "Softmax", "Gather"} <= {node.op_type for node in proto.graph.node}
    session, reference, predict = ort.InferenceSession(path), ReferenceEvaluator(proto), kiln.compile(model)
    for batch in (1, 3, 7):
        tokens = np.random.default_rng(batch).integers(0, 13, (batch, 6))
        expected = predict(tokens)
        np.testing.assert_allclose(session.run(None, {"tokens": tokens})[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(reference.run(None, {"tokens": tokens})[0], expected, rtol=1e-5, atol=1e-5)


def test_tiny_gpt_sgd_training_in_onnxruntime_matches_numpy_for_50_steps():
    require("onnxruntime")

    def loss(logits, target):
        return F.cross_entropy(logits.transpose(1, 2), target)

    results = []
    for backend in ("numpy", "onnxruntime"):
        model = tiny_gpt()
        step = kiln.compile_train_step(model, loss, kiln.optim.SGD(model.parameters(), lr=0.1), backend=backend)
        rng = np.random.default_rng(0)
        losses = [step(tokens[:, :-1], tokens[:, 1:]) for tokens in (rng.integers(0, 13, (4, 7)) for _ in range(50))]
        results.append((losses, {k: v.copy() for k, v in model.state_dict().items()}))
    (losses, params), (ort_losses, ort_params) = results
    np.testing.assert_allclose(ort_losses, losses, rtol=1e-5)
    for name, value in params.items():
        np.testing.assert_allclose(ort_params[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_pool_gradients_lower_to_standard_onnx_ops(kernel, stride, padding):
    require("onnxruntime")
    from kiln.compiler.ir import Builder, Graph, TensorType

    graph = Graph("pool")
    x, c = (graph.add_input(TensorType(("N", 2, 7, 7), "f32"), name) for name in ("x", "c"))
    b = Builder(graph)
    settings = dict(kernel_size=(kernel, kernel), stride=(stride, stride), padding=(padding, padding))
    pooled = b.max_pool2d(x, **settings)
    graph.outputs = [b.max_pool2d_grad(x, b.mul(pooled, pooled), **settings), b.max_pool2d_select(x, c, **settings)]
    rng = np.random.default_rng(kernel)
    image = rng.integers(-3, 3, (3, 2, 7, 7)).astype(np.float32)  # few values: windows with tied maxima
    report = kiln.parity(graph, [image, rng.standard_normal((3, 2, 7, 7)).astype(np.float32)], backends=["onnxruntime"])
    assert report.ok, str(report)


def test_cnn_training_step_file_resumes_on_both_backends(tmp_path):
    require("onnxruntime")
    model = cnn()
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((4, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 4)) for _ in range(10)]
    for batch in data[:5]:
        step(*batch)
    path = str(tmp_path / "cnn_step.onnx")
    kiln.export_onnx_train_step(step, path, batch_size=4)  # conv weight gradients import with a static batch
    expected = [step(*batch) for batch in data[5:]]
    for backend in ("numpy", "onnxruntime"):
        resumed = kiln.load_onnx_train_step(path, backend=backend)
        np.testing.assert_allclose([resumed(*batch) for batch in data[5:]], expected, rtol=1e-5)
