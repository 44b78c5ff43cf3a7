"""stack-summed-products gives the sum it replaces (f64, symbolic batch, with a broadcast term and terms it leaves),
and turns an unrolled LSTM's recurrent-weight gradient from one matmul per step into one stacked matmul."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.backends.numpy.fusion import lower_for_fusion
from kiln.compiler.ir import Builder, Graph
from kiln.compiler.ir.core import clone_graph
from kiln.compiler.ir.types import TensorType
from kiln.compiler.passes import PassManager

STEPS, ROWS, COLUMNS, INNER = 4, 6, 3, "N"


def _summed_steps_graph(transposed: bool) -> Graph:
    """``bias + sum_i a_i @ b_i + m`` and ``sum_i rowsum(g_i)``, the adds in one chain as autodiff builds them."""
    graph = Graph("summed_steps")
    left_shape = (INNER, ROWS) if transposed else (ROWS, INNER)
    lefts = [graph.add_input(TensorType(left_shape, "f64"), f"a{i}") for i in range(STEPS)]
    rights = [graph.add_input(TensorType((INNER, COLUMNS), "f64"), f"b{i}") for i in range(STEPS)]
    bias = graph.add_input(TensorType((COLUMNS,), "f64"), "bias")
    other = graph.add_input(TensorType((ROWS, COLUMNS), "f64"), "m")
    b = Builder(graph)
    total = bias
    for i, (left, right) in enumerate(zip(lefts, rights)):
        total = b.add(total, b.matmul(b.transpose(left, perm=(1, 0)) if transposed else left, right))
        if i == 1:
            total = b.add(total, other)
    row_sums = b.reduce_sum(rights[0], axes=(0,), keepdims=False)
    for right in rights[1:]:
        row_sums = b.add(b.reduce_sum(right, axes=(0,), keepdims=False), row_sums)
    graph.outputs = [total, row_sums]
    return graph


@pytest.mark.parametrize("transposed", [True, False])
def test_the_stacked_sum_equals_the_sum_of_products(transposed):
    graph = _summed_steps_graph(transposed)
    stacked = clone_graph(graph)
    PassManager("stack-summed-products,cse,dce").run(stacked)
    names = [op.name for op in stacked.ops]
    assert names.count("tensor.matmul") == 1 and names.count("tensor.reduce_sum") == 2
    assert names.count("tensor.add") == 2  # bias + stacked product + m; the row sums are one reduction
    whole, one_gemm = NumpyBackend().compile(graph), NumpyBackend().compile(stacked)
    rng = np.random.default_rng(0)
    for inner in (1, 5):
        arrays = [rng.standard_normal(tuple(inner if d == INNER else d for d in v.type.shape)) for v in graph.inputs]
        for got, expected in zip(one_gemm(*arrays), whole(*arrays)):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def _lstm_step_graph(length: int) -> Graph:
    kiln.manual_seed(0)
    model = nn.LSTM(3, 4, batch_first=True)
    step = kiln.compile_train_step(model, lambda out, y: F.mse_loss(out[0], y), kiln.optim.SGD(model.parameters(), lr=0.1))
    rng = np.random.default_rng(0)
    step(rng.standard_normal((2, length, 3)).astype("float32"), rng.standard_normal((2, length, 4)).astype("float32"))
    return step.graph


def _recurrent_weight_products(graph: Graph) -> int:
    """Matmuls that produce a ``weight_hh``-shaped (16 x 4) product."""
    return sum(op.name == "tensor.matmul" and op.result.type.shape[-2:] == (16, 4) for op in graph.ops)


def test_an_unrolled_lstm_gets_its_recurrent_weight_gradient_from_one_matmul():
    graph = _lstm_step_graph(length=6)
    assert _recurrent_weight_products(graph) == 6  # one per step
    lower_for_fusion(graph)
    (product,) = [op for op in graph.ops if op.name == "tensor.matmul" and op.result.type.shape[-2:] == (16, 4)]
    assert product.result.type.shape == (6, 16, 4) and product.operands[0].type.shape == (6, 16, "N")
    ((total, _),) = product.result.uses  # summed over the steps: one GEMM in NumPy's code (batch_summed_matmul_into)
    assert total.name == "tensor.reduce_sum" and total.attrs["axes"] == (0,)
