"""``tensor.reduce_prod`` beyond its op-table row: its gradient at zeros, its second order and its ONNX export.

The row (``op_rows_extra.py``) checks forward values in every dtype and the VJP by finite
differences on inputs with zeros; here the VJP is pinned to the leave-one-out products it
stands for, differentiated again away from zeros, and run in onnxruntime.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.ir import Builder, Graph, TensorType
from oracles import require


def product_graph(shape: tuple, axes: tuple[int, ...]) -> tuple[Graph, Builder]:
    """``@prod(x, w) -> sum(reduce_prod(x, axes) * w)`` (the loss), and a builder to append to it."""
    graph = Graph("prod")
    x = graph.add_input(TensorType(shape, "f64"), "x")
    b = Builder(graph)
    product = b.reduce_prod(x, axes=axes)
    w = graph.add_input(product.type, "w")
    graph.outputs = [b.reduce_sum(b.mul(product, w), axes=None)]
    return graph, b


def leave_one_out(x: np.ndarray, axis: int) -> np.ndarray:
    """d prod / d x_i along ``axis``: the product of the other elements, by loops."""
    out = np.empty_like(x)
    for position in np.ndindex(*x.shape):
        group = [position[:axis] + (j,) + position[axis + 1 :] for j in range(x.shape[axis]) if j != position[axis]]
        out[position] = np.prod([x[p] for p in group])
    return out


def test_gradient_at_zeros_is_the_product_of_the_other_elements():
    graph, _ = product_graph((2, 3, 4), (1,))
    graph.outputs = [graph.outputs[0], *differentiate(graph, graph.outputs[0], [graph.inputs[0]])]
    x = np.random.default_rng(0).uniform(-2, 2, (2, 3, 4))
    x[0, 0, 0] = x[0, 1, 0] = 0.0  # a group with two zeros: all its gradients vanish
    x[1, 2, 3] = 0.0  # a group with one: only that zero's gradient survives
    w = np.random.default_rng(1).standard_normal((2, 4))
    _, gradient = NumpyBackend().compile(graph)(x, w)
    np.testing.assert_allclose(gradient, leave_one_out(x, 1) * w[:, None, :], rtol=1e-12, atol=1e-12)


def test_second_order_matches_finite_differences_away_from_zeros():
    graph, b = product_graph((2, 3), (1,))
    (gradient,) = differentiate(graph, graph.outputs[0], [graph.inputs[0]])
    v = np.random.default_rng(2).standard_normal((2, 3))
    directional = b.reduce_sum(b.mul(gradient, b.constant(v)), axes=None)  # <d loss / dx, v>
    graph.outputs = [directional, *differentiate(graph, directional, [graph.inputs[0]])]
    run = NumpyBackend().compile(graph)
    x, w = np.random.default_rng(3).uniform(0.5, 2, (2, 3)), np.random.default_rng(4).standard_normal((2,))
    _, hessian_v = run(x, w)
    numeric = np.zeros_like(x)
    for position in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[position] = 1e-6
        numeric[position] = (run(x + step, w)[0] - run(x - step, w)[0]) / 2e-6
    np.testing.assert_allclose(hessian_v, numeric, rtol=1e-5, atol=1e-7)


def test_exports_as_onnx_reduce_prod_and_runs_in_onnxruntime():
    ort = require("onnxruntime")
    from kiln.backends.onnx.export import graph_to_onnx

    graph = Graph("prod")
    x = graph.add_input(TensorType(("N", 3, 4), "f32"), "x")
    graph.outputs = [Builder(graph).reduce_prod(x, axes=(1, -1), keepdims=True)]
    proto = graph_to_onnx(graph)
    assert "ReduceProd" in {node.op_type for node in proto.graph.node}
    data = np.random.default_rng(5).uniform(-2, 2, (5, 3, 4)).astype(np.float32)
    data[2, 1, 1] = 0.0
    (got,) = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": data})
    np.testing.assert_allclose(got, np.prod(data, axis=(1, 2), keepdims=True), rtol=1e-6)
