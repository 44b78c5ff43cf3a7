"""Python numbers in traced ops take the dtype of the tensors they meet, a float tensor's over a bool mask's."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn.functional as F
from oracles import require


def test_where_with_a_number_takes_the_values_dtype_not_the_masks():
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    where = kiln.compile(lambda t: F.where(t > 0, t, 0.5))
    np.testing.assert_array_equal(where(x), np.array([[0.5, 2.0], [3.0, 0.5]], np.float32))
    assert where(x).dtype == np.float32
    grad = kiln.grad(lambda t: F.where(t > 0, t * t, -1.5).sum())(x.astype(np.float64))
    np.testing.assert_array_equal(grad, np.where(x > 0, 2 * x, 0.0))


def test_dividing_by_a_symbolic_batch_size_divides_by_its_run_time_size(tmp_path):
    """``x.sum() / x.shape[0]`` and the style tutorial's ``G.div(a * b * c * d)`` traced with a symbolic batch: the
    size is read when the graph runs (it was refused), as torch's SymInt; through an ONNX file with a dynamic batch."""
    onnxruntime = require("onnxruntime")
    graph = kiln.trace(lambda x: x.sum() / x.shape[0], kiln.TensorSpec(("N", 2), "f64"))
    assert "tensor.numel" in {op.name for op in graph.ops}

    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        return kiln.mm(features, features.t()).div(a * b * c * d)

    x = np.linspace(0.0, 1.0, 36, dtype=np.float32).reshape(2, 2, 3, 3)
    path = str(tmp_path / "gram.onnx")
    kiln.onnx.export(gram_matrix, (kiln.tensor(x[:1]),), path, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    (gram,) = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    features = x.reshape(4, 9)
    np.testing.assert_allclose(gram, features @ features.T / 36, rtol=1e-6)
    assert kiln.compile(lambda x: x.sum() / x.shape[0], batch_dim=None)(np.ones((3, 2))) == 2.0
    compiled = kiln.compile(lambda x: x.sum() / x.shape[0])  # traces with static shapes instead, one per batch size
    assert compiled(np.ones((3, 2))) == 2.0 and compiled(np.ones((5, 2))) == 2.0


def test_a_string_operand_is_a_type_error_as_torch():
    torch = require("torch")
    for lib in (kiln, torch):
        try:
            lib.ones(2) / "a"
        except TypeError:
            continue
        raise AssertionError(f"{lib.__name__} divided by a string")
