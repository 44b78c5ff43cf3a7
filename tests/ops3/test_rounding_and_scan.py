"""What the op table's random inputs cannot show for ``tensor.floor``/``ceil``/``round`` and ``tensor.cumsum``.

Rounding at exact halves (half to even) and at integers, in both NumPy code generators and in constant folding;
the shape rules' refusals; the zero gradient at the steps themselves (where a finite difference is meaningless);
cumsum's text form and its scan along a symbolic dim.
"""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir import Builder, Graph, TensorType, parse, print_graph, verify
from kiln.compiler.passes.constant_fold import ConstantFold

STEPS = np.array([-2.5, -1.5, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 1.5, 2.5, 3.5, -3.7, 3.7, np.inf, -np.inf])
EXPECTED = {  # written out, not computed: round is half to even (NumPy's rint, ONNX's Round, torch.round)
    "floor": [-3.0, -2.0, -1.0, -1.0, -0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.0, -4.0, 3.0, np.inf, -np.inf],
    "ceil": [-2.0, -1.0, -1.0, -0.0, -0.0, 0.0, 1.0, 1.0, 2.0, 3.0, 4.0, -3.0, 4.0, np.inf, -np.inf],
    "round": [-2.0, -2.0, -1.0, -0.0, -0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 4.0, -4.0, 4.0, np.inf, -np.inf],
}


def one_op(name: str, shape, dtype: str = "f32", **attrs) -> Graph:
    graph = Graph(name)
    graph.outputs = [Builder(graph).op(f"tensor.{name}", graph.add_input(TensorType(shape, dtype), "x"), **attrs)]
    return graph


def assert_same_bits(actual, expected) -> None:
    """Equal values, dtypes and signs of zero."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(np.signbit(actual), np.signbit(expected))


@pytest.mark.parametrize("planned", [True, False], ids=["planned", "kernels"])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rounding_at_halves_and_integers(name: str, dtype: str, planned: bool):
    backend = NumpyBackend()
    backend.plan_memory = planned
    numpy_dtype = np.float32 if dtype == "f32" else np.float64
    (result,) = backend.compile(one_op(name, ("N",), dtype))(STEPS.astype(numpy_dtype))
    assert_same_bits(result, np.array(EXPECTED[name], numpy_dtype))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_constant_fold_rounds_as_execution_does(name: str):
    graph = Graph("fold")
    b = Builder(graph)
    graph.outputs = [b.op(f"tensor.{name}", b.constant(STEPS, "f64"))]
    assert ConstantFold().run(graph)
    (op,) = graph.ops
    assert op.name == "tensor.constant"
    assert_same_bits(op.attrs["value"], np.array(EXPECTED[name]))


def test_constant_fold_evaluates_cumsum_and_sin():
    graph = Graph("fold")
    b = Builder(graph)
    values = np.arange(6.0).reshape(2, 3)
    graph.outputs = [b.cumsum(b.constant(values, "f64"), axis=1, reverse=True), b.sin(b.constant(values, "f64"))]
    assert ConstantFold().run(graph)
    assert [op.name for op in graph.ops] == ["tensor.constant", "tensor.constant"]
    np.testing.assert_array_equal(graph.ops[0].attrs["value"], [[3.0, 3.0, 2.0], [12.0, 9.0, 5.0]])
    np.testing.assert_array_equal(graph.ops[1].attrs["value"], np.sin(values))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gradient_at_the_steps_is_zero_even_for_an_infinite_cotangent(name: str):
    """PyTorch's zeros, not ``g * 0``: an inf or NaN cotangent does not leak through a step function."""
    graph = one_op(name, (len(STEPS),), "f64")
    x = graph.inputs[0]
    cotangent = graph.add_input(TensorType((len(STEPS),), "f64"), "g")
    loss = Builder(graph).reduce_sum(Builder(graph).mul(graph.outputs[0], cotangent), axes=None)
    graph.outputs = differentiate(graph, loss, [x])
    g = np.full(len(STEPS), np.inf)
    (grad,) = NumpyBackend().compile(graph)(STEPS, g)
    assert_same_bits(grad, np.zeros(len(STEPS)))


def test_cumsum_along_a_symbolic_dim_serves_every_size():
    run = NumpyBackend().compile(one_op("cumsum", ("N", 2), "i32", axis=0, reverse=True))
    for n in (1, 4, 0):
        x = np.arange(2 * n, dtype=np.int32).reshape(n, 2)
        (result,) = run(x)
        expected = np.array([[sum(x[j, k] for j in range(i, n)) for k in range(2)] for i in range(n)], np.int32).reshape(n, 2)
        assert result.dtype == np.int32
        np.testing.assert_array_equal(result, expected)


def test_cumsum_prints_and_parses_with_its_attributes():
    graph = one_op("cumsum", ("N", 3), axis=-2, reverse=True)
    text = print_graph(graph)
    assert '"tensor.cumsum"(%x) {axis = -2, reverse = true} : (tensor<Nx3xf32>) -> tensor<Nx3xf32>' in text
    parsed = parse(text)
    verify(parsed)
    assert print_graph(parsed) == text
    assert '{axis = -1, reverse = false}' in print_graph(one_op("cumsum", (4,)))


@pytest.mark.parametrize(("name", "shape", "dtype", "attrs", "message"), [
    ("floor", (3,), "i32", {}, "tensor.floor needs a floating-point operand"),
    ("round", (3,), "bool", {}, "tensor.round needs a floating-point operand"),
    ("sin", (3,), "i64", {}, "tensor.sin needs a floating-point operand"),
    ("cumsum", (), "f32", {}, "tensor.cumsum needs a numeric operand of rank >= 1"),
    ("cumsum", (3,), "bool", {}, "tensor.cumsum needs a numeric operand of rank >= 1"),
    ("cumsum", (2, 3), "f32", {"axis": 2}, r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"),
])
def test_shape_rules_refuse_what_the_ops_do_not_mean(name, shape, dtype, attrs, message):
    with pytest.raises(ShapeError, match=message):
        one_op(name, shape, dtype, **attrs)
