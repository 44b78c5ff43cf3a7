"""Every VJP rule against central finite differences in float64, to first and second order.

The checked function is ``f(inputs) = sum(op(inputs) * w)`` with fixed random
weights ``w`` (an extra graph input), so every element of the op's result
counts with its own weight. A symbolic case is built with ``N`` and run with
one concrete batch size.
"""

from __future__ import annotations

import numpy as np
import pytest

from ops.op_table import OP_TABLE, ROWS, Case, OpRow, cases, extra_inputs, gradient_graph, make_inputs, op_graph, weighted_sum
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.ir import Builder, Graph, verify
from kiln.compiler.ops import OPS
from kiln.compiler.passes.decompose import Decompose

EPSILON = 1e-6
TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}
SIZES = {"N": 3}
SECOND_ORDER = ("tensor.tanh", "tensor.mul", "tensor.matmul", "nn.softmax", "tensor.exp", "tensor.log", "tensor.sigmoid", "tensor.div")


def second_order(row: OpRow, case: Case) -> tuple[Graph, list[int]]:
    """Outputs ``(g, dg/dx ...)`` with ``g = sum_x sum(df/dx * w2_x)``: the gradient differentiated again."""
    graph, wrt = gradient_graph(row, case, "f64")
    _, *grads = graph.outputs
    terms = [weighted_sum(graph, grad, f"w2_{i}") for i, grad in zip(wrt, grads)]
    g = terms[0] if len(terms) == 1 else Builder(graph).add(*terms)
    graph.outputs = [g, *differentiate(graph, g, [graph.inputs[i] for i in wrt])]
    return graph, wrt


def finite_differences(function, arrays: list[np.ndarray], index: int) -> np.ndarray:
    """Central differences of the scalar ``function(arrays)`` w.r.t. every element of ``arrays[index]``."""
    gradient = np.zeros(arrays[index].shape)
    for position in np.ndindex(arrays[index].shape):
        shifted = []
        for step in (EPSILON, -EPSILON):
            moved = [a.copy() for a in arrays]
            moved[index][position] += step
            shifted.append(float(function(moved)))
        gradient[position] = (shifted[0] - shifted[1]) / (2 * EPSILON)
    return gradient


def check_against_finite_differences(graph: Graph, wrt: list[int], arrays: list[np.ndarray], objective) -> None:
    """Outputs ``1..`` of ``graph`` are the gradients of ``objective(outputs, arrays)`` w.r.t. the inputs at ``wrt``."""
    verify(graph)
    executable = NumpyBackend().compile(graph)
    _, *grads = executable(*arrays)
    for index, grad in zip(wrt, grads):
        assert np.shape(grad) == arrays[index].shape, f"the gradient of input {index} has the wrong shape"
        expected = finite_differences(lambda moved: objective(executable(*moved), moved), arrays, index)
        np.testing.assert_allclose(grad, expected, **TOLERANCE, err_msg=f"gradient w.r.t. input {index}")


@pytest.mark.parametrize(("row", "case", "dtype"), cases(grad=True))
def test_vjp_matches_finite_differences(row: OpRow, case: Case, dtype: str):
    graph, wrt = gradient_graph(row, case, dtype)
    arrays = make_inputs(row, case, dtype, SIZES)
    arrays += extra_inputs(graph, arrays, SIZES, f"{row.name}{case.id}")
    weights = arrays[-1]
    check_against_finite_differences(graph, wrt, arrays, lambda outputs, inputs: np.sum(outputs[0] * weights))


def _second_order_cases() -> list:
    rows = [ROWS[name] for name in SECOND_ORDER]
    return [p for p in cases(rows, grad=True) if p.values[1] in p.values[0].cases[:3] or p.values[1].symbolic]


@pytest.mark.parametrize(("row", "case", "dtype"), _second_order_cases())
def test_second_order_matches_finite_differences(row: OpRow, case: Case, dtype: str):
    graph, wrt = second_order(row, case)
    arrays = make_inputs(row, case, dtype, SIZES)
    arrays += extra_inputs(graph, arrays, SIZES, f"2{row.name}{case.id}")
    check_against_finite_differences(graph, wrt, arrays, lambda outputs, inputs: outputs[0])


@pytest.mark.parametrize(("row", "case", "dtype"), cases([row for row in OP_TABLE if OPS[row.name].is_composite], grad=True))
def test_composite_vjp_matches_decomposition(row: OpRow, case: Case, dtype: str):
    """The direct rule of a composite and autodiff through its primitives give one gradient."""
    gradients = []
    for expand in (False, True):
        graph, inputs, _ = op_graph(row, case, dtype)
        if expand:
            Decompose().run(graph)
            assert not any(OPS[op.name].is_composite for op in graph.ops)
        wrt = [v for v in inputs if v.type.dtype.is_float]
        graph.outputs = differentiate(graph, weighted_sum(graph, graph.outputs[0], "w"), wrt)
        verify(graph)
        arrays = make_inputs(row, case, dtype, SIZES)
        gradients.append(NumpyBackend().compile(graph)(*arrays, *extra_inputs(graph, arrays, SIZES, case.id)))
    for direct, expanded in zip(*gradients):
        np.testing.assert_allclose(direct, expanded, rtol=1e-10, atol=1e-12)
