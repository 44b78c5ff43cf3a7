"""What the op table's row cannot show for ``tensor.argsort``: PyTorch's ``torch.sort(stable=True)`` as the oracle,
written-out orders at ties, NaN, infinities and signed zeros, constant folding, the text form, the shape rule's
refusals (a symbolic sorted axis above all), and that autodiff passes over it (``non_differentiable``) to the
values it gathers.
"""

from __future__ import annotations

import numpy as np
import pytest

from ops.op_table import ROWS, Case, OpRow, cases, concrete, concrete_attrs, make_inputs, op_graph
from oracles import require
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir import Builder, Graph, TensorType, parse, print_graph, verify
from kiln.compiler.ops import has_trait
from kiln.compiler.passes.constant_fold import ConstantFold

KEYS = np.array([2.0, np.nan, -0.0, 2.0, -np.inf, 0.0, np.nan, np.inf, -1.0, 2.0, 0.0])
ASCENDING = [4, 8, 2, 5, 10, 0, 3, 9, 7, 1, 6]  # written out: ties (2.0 x3, the zeros) and NaNs in their original order
DESCENDING = [1, 6, 7, 0, 3, 9, 2, 5, 10, 8, 4]  # NaNs first, then inf; ties still in their original order
TORCH_SIZES = ({"N": 1}, {"N": 4})


def one_op(shape, dtype: str = "f32", **attrs) -> Graph:
    graph = Graph("argsort")
    graph.outputs = [Builder(graph).argsort(graph.add_input(TensorType(shape, dtype), "x"), **attrs)]
    return graph


def torch_argsort(torch, x: np.ndarray, *, axis: int, descending: bool) -> np.ndarray:
    return torch.sort(torch.from_numpy(x), dim=axis, descending=descending, stable=True).indices.numpy()


@pytest.mark.parametrize("planned", [True, False], ids=["planned", "kernels"])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize(("descending", "expected"), [(False, ASCENDING), (True, DESCENDING)], ids=["ascending", "descending"])
def test_written_out_orders_at_ties_nan_and_infinities(descending: bool, expected: list[int], dtype: str, planned: bool):
    backend = NumpyBackend()
    backend.plan_memory = planned
    x = np.stack([KEYS, KEYS[::-1]]).astype(np.float32 if dtype == "f32" else np.float64)
    (result,) = backend.compile(one_op(("N", len(KEYS)), dtype, axis=1, descending=descending))(x)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result[0], expected)
    # KEYS reversed: the other direction's order read backwards, each index i becoming n - 1 - i (ties stay in order)
    np.testing.assert_array_equal(result[1], [len(KEYS) - 1 - i for i in (ASCENDING if descending else DESCENDING)][::-1])


def test_descending_is_not_ascending_read_backwards():
    run = NumpyBackend().compile(one_op((6,), "i32", descending=True))
    (result,) = run(np.array([1, 3, 1, 3, 2, 1], np.int32))
    np.testing.assert_array_equal(result, [1, 3, 4, 0, 2, 5])  # [5, 2, 4, 3, 1, 0] reversed would swap the ties


@pytest.mark.parametrize(("row", "case", "dtype"), cases([ROWS["tensor.argsort"]]))
def test_op_table_cases_match_torch_sort_stable(row: OpRow, case: Case, dtype: str):
    """Every axis and direction of the row, floats with ties, NaN and +-inf, ints with many ties."""
    torch = require("torch")
    graph, _, _ = op_graph(row, case, dtype)
    run = NumpyBackend().compile(graph)
    for sizes in TORCH_SIZES if case.symbolic else ({},):
        (x,) = make_inputs(row, case, dtype, sizes, salt="torch")
        (result,) = run(x)
        assert result.shape == concrete(case.shapes[0], sizes) and result.dtype == np.int64
        np.testing.assert_array_equal(result, torch_argsort(torch, x, **concrete_attrs(case.attrs, sizes)))


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_long_lanes_with_few_distinct_values_match_torch(dtype, axis: int, descending: bool):
    """Lanes of 300 with 5 distinct values (NaN among the floats): far past any insertion-sort cut-off."""
    torch = require("torch")
    rng = np.random.default_rng(axis % 3 + 3 * descending)
    shape = [4, 3, 5]
    shape[axis] = 300
    pool = np.array([np.nan, -1.0, 0.0, 1.0, np.inf]) if dtype == np.float32 else np.arange(-2, 3)
    x = rng.choice(pool, shape).astype(dtype)
    (result,) = NumpyBackend().compile(one_op(tuple(shape), "f32" if dtype == np.float32 else "i64", axis=axis, descending=descending))(x)
    np.testing.assert_array_equal(result, torch_argsort(torch, x, axis=axis, descending=descending))


def test_constant_fold_sorts_as_execution_does():
    graph = Graph("fold")
    b = Builder(graph)
    values = np.stack([KEYS, KEYS[::-1]])
    graph.outputs = [b.argsort(b.constant(values, "f64"), axis=1, descending=True), b.argsort(b.constant(values, "f64"), axis=0)]
    assert ConstantFold().run(graph)
    assert [op.name for op in graph.ops] == ["tensor.constant", "tensor.constant"]
    descending, by_column = (op.attrs["value"] for op in graph.ops)
    assert descending.dtype == by_column.dtype == np.int64
    np.testing.assert_array_equal(descending[0], DESCENDING)
    np.testing.assert_array_equal(descending[1], [4, 9, 3, 1, 7, 10, 0, 5, 8, 2, 6])  # KEYS reversed
    first = [1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0]  # per column, the row of the smaller (NaN the largest; ties row 0)
    np.testing.assert_array_equal(by_column, [first, [1 - i for i in first]])


def test_prints_and_parses_with_its_attributes():
    graph = one_op(("N", 3), "i32", axis=1, descending=True)
    text = print_graph(graph)
    assert '"tensor.argsort"(%x) {axis = 1, descending = true} : (tensor<Nx3xi32>) -> tensor<Nx3xi64>' in text
    parsed = parse(text)
    verify(parsed)
    assert print_graph(parsed) == text
    assert "{axis = -1, descending = false}" in print_graph(one_op((4,)))


@pytest.mark.parametrize(("shape", "dtype", "attrs", "message"), [
    (("N", 3), "f32", {"axis": 0}, r"tensor.argsort needs a static size along the sorted axis 0, got the symbolic dim N in tensor<Nx3xf32>"),
    ((2, "N"), "i64", {}, r"tensor.argsort needs a static size along the sorted axis -1, got the symbolic dim N"),
    ((), "f32", {}, "tensor.argsort needs a numeric operand of rank >= 1"),
    ((3,), "bool", {}, "tensor.argsort needs a numeric operand of rank >= 1"),
    ((2, 3), "f32", {"axis": 2}, r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"),
])
def test_shape_rule_refuses_what_it_cannot_sort(shape, dtype, attrs, message):
    with pytest.raises(ShapeError, match=message):
        one_op(shape, dtype, **attrs)


def test_autodiff_passes_over_the_indices_to_the_gathered_values():
    """``d sum(w * x[argsort(x)])/dx`` is ``w`` scattered back through the permutation: argsort itself has no VJP."""
    assert has_trait("tensor.argsort", "non_differentiable")
    graph = Graph("sorted_values")
    x = graph.add_input(TensorType((5,), "f64"), "x")
    w = graph.add_input(TensorType((5,), "f64"), "w")
    b = Builder(graph)
    ordered = b.take(x, b.argsort(x, descending=True), axis=0)
    graph.outputs = [ordered, *differentiate(graph, b.reduce_sum(b.mul(ordered, w), axes=None), [x])]
    x_value, w_value = np.array([0.5, 2.0, -1.0, 2.0, 7.0]), np.arange(1.0, 6.0)
    values, grad = NumpyBackend().compile(graph)(x_value, w_value)
    np.testing.assert_array_equal(values, [7.0, 2.0, 2.0, 0.5, -1.0])
    np.testing.assert_array_equal(grad, [4.0, 2.0, 5.0, 3.0, 1.0])  # x[4] is first (w 1), x[1], x[3] next in order
