"""ONNX: inference export, the whole SGD training step in onnxruntime and the reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.onnx.export import graph_to_onnx
from oracles import require


def mlp():
    kiln.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 10), nn.Softmax(dim=1))


def test_inference_export_matches_numpy_at_several_batch_sizes(tmp_path):
    onnx, ort = require("onnx"), require("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    model = mlp()
    path = str(tmp_path / "mlp.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 64), "float32")], path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [i.name for i in proto.graph.initializer] == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    session, reference = ort.InferenceSession(path), ReferenceEvaluator(proto)
    predict = kiln.compile(model)
    for batch in (1, 5, 33):
        x = np.random.default_rng(batch).standard_normal((batch, 64)).astype(np.float32)
        expected = predict(x)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(reference.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-6)


def test_large_weights_go_to_an_external_data_file(tmp_path):
    ort = require("onnxruntime")
    model = mlp()
    path = tmp_path / "big.onnx"
    kiln.export_onnx(model, [kiln.TensorSpec(("N", 64))], str(path), external_data_threshold=1000)
    assert (tmp_path / "big.onnx.data").stat().st_size > 10000
    assert path.stat().st_size < 5000
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(ort.InferenceSession(str(path)).run(None, {"input": x})[0], kiln.compile(model)(x), rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]  # no temporary left behind


def test_a_function_of_several_inputs_exports_with_their_names(tmp_path):
    ort = require("onnxruntime")

    def blend(image, mask):
        return F.sigmoid(image) * mask + (1 - mask) * image.tanh()

    path = str(tmp_path / "blend.onnx")
    kiln.export_onnx(blend, [kiln.TensorSpec(("N", 3)), kiln.TensorSpec(("N", 3))], path)
    session = ort.InferenceSession(path)
    assert [i.name for i in session.get_inputs()] == ["image", "mask"]
    a, m = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"image": a, "mask": m})[0], kiln.compile(blend)(a, m), rtol=1e-5, atol=1e-6)


def make_step(backend):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return model, kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1), backend=backend)


def batches(count, size=16):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((size, 64)).astype(np.float32), rng.integers(0, 10, size)) for _ in range(count)]


def test_training_step_graph_is_valid_standard_onnx_and_runs_in_the_reference_evaluator():
    onnx = require("onnx")
    from onnx.reference import ReferenceEvaluator

    model, step = make_step("numpy")
    x, y = batches(1)[0]
    params = [p.data.copy() for p in step.optimizer.parameters()]
    proto = graph_to_onnx(step.compile(*[kiln.TensorSpec(("N", 64)), kiln.TensorSpec(("N",), "int64")]).graph)
    onnx.checker.check_model(proto, full_check=True)
    assert {node.domain for node in proto.graph.node} <= {""}  # standard ops only
    outputs = ReferenceEvaluator(proto).run(None, dict(zip([i.name for i in proto.graph.input], [x, y, *params, np.float32(0.1)])))
    loss = step(x, y)
    np.testing.assert_allclose(outputs[0], loss, rtol=1e-5)
    for new, value in zip(outputs[1:], model.state_dict().values()):
        np.testing.assert_allclose(new, value, rtol=1e-5, atol=1e-6)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(kiln.KilnError, match="available: numpy, onnxruntime"):
        kiln.compile_train_step(mlp(), F.cross_entropy, kiln.optim.SGD(mlp().parameters()), backend="tpu")


def test_gradient_of_a_function_exports_as_plain_onnx(tmp_path):
    onnx, ort = require("onnx"), require("onnxruntime")
    model = mlp()

    def confidence(image):
        return (model(image) * np.eye(10, dtype=np.float32)[3]).sum()  # class-3 probability summed over the batch

    saliency = kiln.grad(confidence)
    path = str(tmp_path / "saliency.onnx")
    proto = kiln.export_onnx(saliency, [kiln.TensorSpec(("N", 64))], path)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["image"]
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    got = ort.InferenceSession(path).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, saliency(x), rtol=1e-5, atol=1e-6)
    torch = require("torch")
    reference = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10), torch.nn.Softmax(-1))
    reference.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    image = torch.tensor(x, requires_grad=True)
    reference(image)[:, 3].sum().backward()
    np.testing.assert_allclose(got, image.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_imported_model_fine_tunes_like_the_original_and_re_exports(tmp_path):
    ort = require("onnxruntime")
    model = mlp()
    path = str(tmp_path / "mlp.onnx")
    kiln.export_onnx(model, [kiln.TensorSpec(("N", 64))], path)
    imported = kiln.import_onnx(path).module()
    assert list(imported.state_dict()) == list(model.state_dict())

    def loss(probabilities, target):
        return F.mse_loss(probabilities, target)

    steps = [kiln.compile_train_step(m, loss, kiln.optim.SGD(m.parameters(), lr=0.5)) for m in (model, imported)]
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, target = rng.standard_normal((8, 64)).astype(np.float32), rng.dirichlet(np.ones(10), 8).astype(np.float32)
        losses = [step(x, target) for step in steps]
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(imported.state_dict()[name], value, rtol=1e-5, atol=1e-7)
    again = str(tmp_path / "again.onnx")
    kiln.export_onnx(imported, [kiln.TensorSpec(("N", 64))], again)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(ort.InferenceSession(again).run(None, {"input": x})[0], kiln.compile(model)(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "unsupported op", "missing input"])
def test_bad_onnx_files_get_one_clear_error(tmp_path, damage):
    onnx = require("onnx")
    from onnx import helper

    path = tmp_path / "bad.onnx"
    if damage == "truncated":
        kiln.export_onnx(mlp(), [kiln.TensorSpec(("N", 64))], str(path))
        path.write_bytes(path.read_bytes()[:200])
        expected = "not a readable ONNX model"
    else:
        op = "Hardmax" if damage == "unsupported op" else "Relu"
        source = "x" if damage == "unsupported op" else "ghost"
        graph = helper.make_graph([helper.make_node(op, [source], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                                  [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
        expected = "opset 20.*cannot import ONNX op 'Hardmax'" if damage == "unsupported op" else "ghost"
    with pytest.raises(kiln.KilnError, match=expected):
        kiln.import_onnx(str(path))


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod"])
@pytest.mark.parametrize("axes", [(), (1,), None])
def test_reductions_export_with_kilns_axes_meaning(op, axes):
    """``axes=()`` reduces nothing in kiln; ONNX reads an empty axes input as "all axes", so it exports as Identity."""
    onnx, ort = require("onnx"), require("onnxruntime")
    from kiln.backends.numpy import NumpyBackend
    from kiln.compiler.ir import Builder, Graph, TensorType

    graph = Graph("reduce")
    x = graph.add_input(TensorType((2, 3, 4), "float32"), "x")
    graph.outputs = [getattr(Builder(graph), op)(x, axes=axes, keepdims=False)]
    proto = graph_to_onnx(graph)
    onnx.checker.check_model(proto, full_check=True)
    value = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    (want,) = NumpyBackend().compile(graph)(value)
    (got,) = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": value})
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_bool_masks_joined_with_or_and_and_run_in_onnxruntime():
    """``m1 | m2`` and ``m1 & m2`` trace to a bool-valued ``tensor.where``; onnxruntime has no bool Where, so it exports
    as ``Or(And(c, a), And(Not(c), b))``: both oracles give kiln's masks, broadcasting included."""
    from onnx_nodes import exported_sessions

    graph = kiln.trace(lambda x, row: ((x > 0) | (x < -1), (x > 0) & (row > 0.5), ~(x > 0) | (row > 0)),
                       kiln.TensorSpec(("N", 3), "float32"), kiln.TensorSpec((3,), "float32"))
    proto, names, oracles = exported_sessions(graph)
    assert not any(node.op_type == "Where" for node in proto.graph.node)
    x = np.array([[0.5, -2.0, -0.5], [0.0, 3.0, -1.0]], np.float32)
    row = np.array([1.0, 0.0, -1.0], np.float32)
    expected = [(x > 0) | (x < -1), (x > 0) & (row > 0.5), ~(x > 0) | (row > 0)]
    for oracle, session in oracles.items():
        for got, want in zip(session.run(None, dict(zip(names, [x, row]))), expected):
            assert got.dtype == np.bool_
            np.testing.assert_array_equal(got, want, err_msg=oracle)
