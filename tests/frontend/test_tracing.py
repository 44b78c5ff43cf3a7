"""Tracing: Python operators become IR ops; errors name the user's source line."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln import TensorSpec
from oracles import require


def test_operators_trace_to_ops_and_compute_like_numpy():
    def fn(x, y):
        return ((x + y) * 2 - y / 3) ** 2, -x @ y.T, x.T, x.sum(), x.mean(1, keepdim=True), x.reshape(4, -1), 1 - x

    specs = [TensorSpec((3, 4), "float64"), TensorSpec((3, 4), "float64")]
    graph = kiln.trace(fn, *specs)
    text = str(graph)
    for op in ("tensor.add", "tensor.mul", "tensor.sub", "tensor.div", "tensor.pow", "tensor.neg", "tensor.matmul",
               "tensor.transpose", "tensor.reduce_sum", "tensor.reduce_mean", "tensor.reshape"):
        assert f'"{op}"' in text, op
    assert text.startswith("func @fn(%x: tensor<3x4xf64>, %y: tensor<3x4xf64>)")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 4))
    results = kiln.compile(fn)(x, y)
    expected = (((x + y) * 2 - y / 3) ** 2, -x @ y.T, x.T, x.sum(), x.mean(1, keepdims=True), x.reshape(4, -1), 1 - x)
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_symbolic_batch_dim_is_kept_in_the_ir():
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    graph = kiln.trace(model, TensorSpec(("N", 8), "float32"))
    assert "tensor<Nx8xf32>" in str(graph) and "tensor<Nx4xf32>" in str(graph)
    assert [v.name_hint for v in graph.inputs] == ["input", "0.weight", "0.bias"]


def test_shape_error_names_the_user_line_the_op_and_both_shapes():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            return self.fc(x)  # x has 6 features: the matmul cannot contract

    with pytest.raises(kiln.TraceError) as info:
        kiln.trace(Broken(), TensorSpec(("N", 6), "float32"))
    message = str(info.value)
    assert "test_tracing.py:" in message
    assert "functional.py" not in message.splitlines()[0]
    assert "mat1 and mat2 shapes cannot be multiplied (Nx6 and 5x3)" in message  # torch's words, both shapes


def test_shape_error_in_user_function_points_at_that_line():
    def fn(x, y):
        z = x * 2
        return z + y  # (2, 3) + (4,) do not broadcast

    with pytest.raises(kiln.TraceError) as info:
        kiln.trace(fn, TensorSpec((2, 3)), TensorSpec((4,)))
    assert "return z + y" in str(info.value)
    assert "(2, 3)" in str(info.value) and "(4,)" in str(info.value)


def test_python_control_flow_on_tensors_is_a_clear_error():
    def fn(x):
        return x if x > 0 else -x

    with pytest.raises(kiln.TraceError, match="truth value"):
        kiln.trace(fn, TensorSpec((2,)))


def test_functional_names_and_defaults_follow_pytorch():
    def fn(x, y):
        return (F.softmax(x), F.log_softmax(x, dim=0), F.sigmoid(x), F.tanh(x), F.relu(x),
                F.cross_entropy(x, y), F.cross_entropy(x, y, reduction="sum"), F.mse_loss(x, x * 2))

    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax has been deprecated.*dim=1"):
        graph = kiln.trace(fn, TensorSpec(("N", 5)), TensorSpec(("N",), "int64"))
    text = str(graph)
    assert '"nn.softmax"(%x) {axis = 1}' in text and '{axis = 0}' in text
    assert 'reduction = "mean"' in text and 'reduction = "sum"' in text and '"nn.mse"' in text


@pytest.mark.parametrize(("shape", "implicit"), [((4,), 0), ((2, 4), 1), ((3, 2, 4), 0), ((2, 3, 4, 5), 1)])
def test_softmax_without_dim_picks_torchs_implicit_dim_and_warns(shape, implicit):
    torch = require("torch")
    x = np.random.default_rng(0).standard_normal(shape)
    with pytest.warns(UserWarning, match=f"dim={implicit}"):
        got = kiln.compile(lambda t: nn.Softmax()(t), batch_dim=None)(x)
    with pytest.warns(UserWarning):
        expected = torch.nn.Softmax()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
