"""``nn.layer_norm_grad``: layer norm's whole backward as one op, against PyTorch's autograd.

The VJP of ``nn.layer_norm`` is this one op (three results: dx, and the weight's
and bias's gradients summed over the leading axes), so a backend can lower the
backward as one row kernel; its decomposition is the math, run here on the
NumPy backend in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir import Builder, Graph
from kiln.compiler.ir.types import TensorType
from ops.test_attention_grad import encoder_layer_step_op_names
from oracles import require_torch

GRAD = "nn.layer_norm_grad"
CASES = [  # x shape, normalized (weight) shape, eps
    ((5, 8), (8,), 1e-5),
    ((2, 3, 7), (7,), 1e-5),
    ((2, 3, 4), (3, 4), 1e-3),  # normalized over the two trailing axes
    ((6,), (6,), 0.1),  # no leading axes: the parameters' gradients are not summed
    ((2, 2, 3, 5), (5,), 1e-5),
]


def _grad_graph(x_shape, weight_shape, eps):
    graph = Graph("layer_norm_grad")
    x = graph.add_input(TensorType(x_shape, "f64"), "x")
    weight = graph.add_input(TensorType(weight_shape, "f64"), "weight")
    g = graph.add_input(TensorType(x_shape, "f64"), "g")
    graph.outputs = list(Builder(graph).op(GRAD, x, weight, g, eps=eps))
    return graph


def _inputs(rng, x_shape, weight_shape):
    return rng.standard_normal(x_shape) * 3 + 1, rng.standard_normal(weight_shape), rng.standard_normal(x_shape)


def _torch_grads(torch, arrays, weight_shape, eps):
    x, weight, g = (torch.tensor(a, requires_grad=True) for a in arrays)
    bias = torch.zeros(weight_shape, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.layer_norm(x, weight_shape, weight, bias, eps).backward(g)
    return [t.grad.numpy() for t in (x, weight, bias)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-over{'x'.join(map(str, c[1]))}")
def test_the_grad_op_matches_torch_autograd(case):
    torch = require_torch()
    x_shape, weight_shape, eps = case
    arrays = _inputs(np.random.default_rng(0), x_shape, weight_shape)
    run = NumpyBackend().compile(_grad_graph(x_shape, weight_shape, eps))
    for actual, expected in zip(run(*arrays), _torch_grads(torch, arrays, weight_shape, eps)):
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


def test_one_executable_serves_every_batch_size():
    torch = require_torch()
    run = NumpyBackend().compile(_grad_graph(("N", 3, 6), (6,), 1e-5))
    for n in (1, 4):
        arrays = _inputs(np.random.default_rng(n), (n, 3, 6), (6,))
        for actual, expected in zip(run(*arrays), _torch_grads(torch, arrays, (6,), 1e-5)):
            np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weight_shape, g_shape, message", [
    ((4,), (2, 5), r"cotangent must have x's type tensor<2x4xf64>, got tensor<2x5xf64>"),
    ((3,), (2, 4), r"trailing dims equal weight's"),
])
def test_mismatched_operands_are_refused_with_their_types(weight_shape, g_shape, message):
    graph = Graph("bad")
    x = graph.add_input(TensorType((2, 4), "f64"))
    weight, g = graph.add_input(TensorType(weight_shape, "f64")), graph.add_input(TensorType(g_shape, "f64"))
    with pytest.raises(ShapeError, match=message):
        Builder(graph).op(GRAD, x, weight, g)


def test_a_training_step_has_one_backward_op_per_layer_norm():
    names = encoder_layer_step_op_names()
    assert names.count("nn.layer_norm") == names.count(GRAD) == 2
