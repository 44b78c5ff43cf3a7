"""``tensor.pad`` with interior padding (the gradient of a strided slice such as ``x[:, ::2]``) exported to ONNX:
standard ops only, the same values as the NumPy backend in onnxruntime and in onnx's reference evaluator, with a
symbolic batch dim; and a training step that slices with a stride, exported and run through ``kiln.parity``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.backends.onnx.export import graph_to_onnx
from kiln.compiler.ir import Builder, Graph, TensorType
from oracles import require

# (input shape, low, high, interior, value): one or several spread axes, with and without edges, a size-1 axis
PADS = {
    "one_axis": (("N", 5), (0, 0), (0, 0), (0, 1), 0.0),
    "one_axis_and_edges": (("N", 3, 4), (0, 2, 1), (0, 0, 3), (0, 0, 2), -1.5),
    "two_axes": (("N", 2, 3, 4), (0, 0, 1, 0), (0, 0, 0, 2), (0, 0, 3, 1), 0.25),
    "every_static_axis": ((2, 3, 4), (1, 0, 2), (0, 1, 1), (1, 2, 3), 7.0),
    "size_one_axis": (("N", 1, 4), (0, 1, 0), (0, 0, 1), (0, 4, 2), 0.0),
}


def interior_pad_graph(shape, low, high, interior, value, dtype):
    graph = Graph("interior_pad")
    x = graph.add_input(TensorType(shape, dtype), "x")
    graph.outputs = [Builder(graph).pad(x, low=low, high=high, interior=interior, value=value)]
    return graph


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(PADS))
def test_interior_pad_exports_and_matches_numpy(case, dtype):
    onnx, ort = require("onnx"), require("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    graph = interior_pad_graph(*PADS[case], dtype)
    proto = graph_to_onnx(graph)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    assert {node.domain for node in proto.graph.node} <= {""}
    session, reference, run = ort.InferenceSession(proto.SerializeToString()), ReferenceEvaluator(proto), NumpyBackend().compile(graph)
    for batch in (1, 3):
        shape = tuple(batch if isinstance(dim, str) else dim for dim in PADS[case][0])
        x = np.random.default_rng(batch).standard_normal(shape).astype(dtype)
        (expected,) = run(x)
        np.testing.assert_array_equal(session.run(None, {"x": x})[0], expected, err_msg="onnxruntime")
        np.testing.assert_array_equal(reference.run(None, {"x": x})[0], expected, err_msg="reference evaluator")


def test_interior_fill_keeps_infinities_and_nans_in_their_cells():
    """Every element is copied, never multiplied into place: an inf or a NaN leaves the fill around it alone."""
    ort = require("onnxruntime")
    graph = interior_pad_graph((2, 3), (0, 1), (0, 1), (1, 2), 0.0, "float32")
    x = np.array([[1, np.inf, 2], [np.nan, 3, -np.inf]], np.float32)
    (expected,) = NumpyBackend().compile(graph)(x)
    got = ort.InferenceSession(graph_to_onnx(graph).SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, expected)
    assert np.isfinite(got).sum() == got.size - 3


class StridedHead(nn.Module):
    """A hidden layer read at every other feature (``h[:, ::2]``) and, strided again, at every third from the second."""

    def __init__(self):
        super().__init__()
        self.hidden, self.even, self.third = nn.Linear(6, 10), nn.Linear(5, 4), nn.Linear(3, 4)

    def forward(self, x):
        h = self.hidden(x).tanh()
        return self.even(h[:, ::2]) + self.third(h[:, 1::3])


def strided_step():
    kiln.manual_seed(0)
    model = StridedHead()
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    rng = np.random.default_rng(0)
    return model, step, [(rng.standard_normal((size, 6)).astype(np.float32), rng.integers(0, 4, size)) for size in (5, 7, 3)]


def test_a_training_step_with_strided_slices_passes_parity_on_onnx():
    require("onnxruntime")
    _, step, batches = strided_step()
    step(*batches[0])
    assert any(op.name == "tensor.pad" and any(op.attrs["interior"]) for op in step.graph.ops)
    report = kiln.parity(step, list(batches[1]), backends=["onnxruntime"])
    assert report.ok and not report.unsupported, str(report)
    assert max(report.differences["onnxruntime"]) < 1e-5


def test_a_training_step_with_strided_slices_exports_and_trains_as_numpy(tmp_path):
    onnx, ort = require("onnx"), require("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    model, step, batches = strided_step()
    step(*batches[0])
    path = str(tmp_path / "strided.onnx")
    proto = kiln.export_onnx_train_step(step, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    names = [i.name for i in proto.graph.input]
    feeds = dict(zip(names, batches[1]))
    ort_loss, reference_loss = ort.InferenceSession(path).run(None, feeds)[0], ReferenceEvaluator(proto).run(None, feeds)[0]
    np.testing.assert_allclose(reference_loss, ort_loss, rtol=1e-5)
    resumed = kiln.load_onnx_train_step(path, backend="onnxruntime")  # the file holds the state after the first batch
    losses = [step(*batch) for batch in batches[1:]]
    np.testing.assert_allclose(ort_loss, losses[0], rtol=1e-5)
    np.testing.assert_allclose([resumed(*batch) for batch in batches[1:]], losses, rtol=1e-5)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(resumed.parameters()[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
