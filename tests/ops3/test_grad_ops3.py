"""Second-order VJPs of the movement, conv and transformer ops (and batched matmul) against finite differences in float64.

First-order VJPs of every row (these included) are checked by
``tests/autodiff/test_vjp_finite_differences.py``, which runs the whole op
table. Here the backward graph of ``sum(op(inputs) * weights)`` is itself
differentiated (the gradient's dot with fixed weights), checking that the
rules are built from differentiable ops, as ``kiln.grad`` of ``kiln.grad`` needs.
"""

from __future__ import annotations

import numpy as np
import pytest

from ops.op_table import ROWS, Case, OpRow, cases, make_inputs, op_graph, size_bindings
from ops3.op_rows_extra import EXTRA_ROWS
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.ir import Builder

STEP = 1e-6
SECOND_ORDER = ("linalg.inv", "linalg.solve", "linalg.det", "linalg.logabsdet", "linalg.cholesky", "linalg.solve_triangular",
                "tensor.erf", "tensor.rsqrt", "tensor.sin", "tensor.cos", "tensor.round", "tensor.cumsum", "tensor.cumprod", "tensor.atan",
                "tensor.asin", "tensor.acos", "tensor.take", "tensor.scatter_add",
                "tensor.concat", "tensor.slice", "tensor.pad", "tensor.conv2d", "tensor.conv2d_input_grad", "tensor.conv2d_weight_grad", "tensor.avg_pool2d", "nn.gelu", "nn.layer_norm",
                "nn.scaled_dot_product_attention", "tensor.matmul", "tensor.max_pool2d", "nn.dropout", "nn.batch_norm")


def _weighted_loss_graph(row: OpRow, case: Case, sizes: dict[str, int]):
    """``(graph, float input positions, weights)``: the graph returns ``sum(op * weights)`` and its gradients."""
    graph, inputs, result = op_graph(row, case, "f64")
    b = Builder(graph)
    weights = np.random.default_rng(7).standard_normal(_static_part(result.type.shape))
    loss = b.reduce_sum(b.mul(result, b.broadcast_to(b.constant(weights), shape=result.type.shape)), axes=None)
    wrt = [i for i, v in enumerate(inputs) if v.type.dtype.is_float]
    graph.outputs = [loss, *differentiate(graph, loss, [inputs[i] for i in wrt])]
    return graph, wrt


def _static_part(shape) -> tuple[int, ...]:
    """Weights for a result of ``shape``: a symbolic dim becomes 1 (the weights broadcast along it)."""
    return tuple(1 if isinstance(d, str) else d for d in shape)


def _numeric_gradient(run, arrays: list[np.ndarray], index: int) -> np.ndarray:
    gradient = np.zeros_like(arrays[index])
    for position in np.ndindex(*arrays[index].shape):
        shifted = []
        for sign in (1, -1):
            moved = [a.copy() for a in arrays]
            moved[index][position] += sign * STEP
            shifted.append(run(moved))
        gradient[position] = (shifted[0] - shifted[1]) / (2 * STEP)
    return gradient


GRAD_ROWS = [row for row in EXTRA_ROWS if row.differentiable] + [ROWS["tensor.matmul"]]


@pytest.mark.parametrize(("row", "case", "dtype"), cases([row for row in GRAD_ROWS if row.name in SECOND_ORDER], grad=True))
def test_vjp_of_vjp_matches_finite_differences(row: OpRow, case: Case, dtype: str):
    """Differentiate ``<grad, v>`` again: the backward graph is itself differentiable."""
    sizes = size_bindings(case)[0]
    graph, wrt = _weighted_loss_graph(row, case, sizes)
    b = Builder(graph)
    rng = np.random.default_rng(3)
    total = None
    for grad in graph.outputs[1:]:
        weights = rng.standard_normal(_static_part(grad.type.shape))
        term = b.reduce_sum(b.mul(grad, b.broadcast_to(b.constant(weights), shape=grad.type.shape)), axes=None)
        total = term if total is None else b.add(total, term)
    inputs = [graph.inputs[i] for i in wrt]
    graph.outputs = [total, *differentiate(graph, total, inputs)]
    executable = NumpyBackend().compile(graph)
    arrays = make_inputs(row, case, "f64", sizes)
    _, *second = executable(*arrays)
    for index, grad in zip(wrt, second):
        numeric = _numeric_gradient(lambda moved: float(executable(*moved)[0]), arrays, index)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6, err_msg=f"operand {index}")
