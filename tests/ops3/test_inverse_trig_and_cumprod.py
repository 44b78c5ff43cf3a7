"""``tensor.atan``/``asin``/``acos`` and ``tensor.cumprod`` against PyTorch in float64, and what the op table's random
inputs cannot show.

Every op-table case against torch (values to 1e-12, gradients to 1e-10); cumprod's gradient with zero, one, two and
three zeros a lane, forward and reverse, along a symbolic batch and a symbolic scanned axis, against torch's backward
(whose zero-aware path is not the division ``reverse_cumsum(g y) / x``) and finite differences; its second derivative
with one zero a lane against torch's double backward; the inverse trigonometric ops at +-1, +-inf, NaN and outside
[-1, 1]; print/parse, constant folding and the shape rules' refusals.
"""

from __future__ import annotations

import numpy as np
import pytest

from oracles import require
from ops.op_table import ROWS, Case, OpRow, cases, concrete_attrs, make_inputs
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir import Builder, Graph, TensorType, parse, print_graph, verify
from kiln.compiler.passes.constant_fold import ConstantFold

OPS = ("tensor.atan", "tensor.asin", "tensor.acos", "tensor.cumprod")
SIZES = {"N": 3}


def torch_op(torch, name: str, x, **attrs):
    if name != "tensor.cumprod":
        return getattr(torch, name.split(".")[1])(x)
    axis = attrs["axis"]
    if attrs["reverse"]:
        return torch.flip(torch.cumprod(torch.flip(x, (axis,)), axis), (axis,))
    return torch.cumprod(x, axis)


def gradient_graph(name: str, shape, attrs: dict) -> Graph:
    """``(x, w) -> (op(x), d sum(op(x) * w)/dx)`` in float64."""
    graph = Graph(name.replace(".", "_"))
    x, w = (graph.add_input(TensorType(shape, "f64"), hint) for hint in ("x", "w"))
    b = Builder(graph)
    y = b.op(name, x, **attrs)
    graph.outputs = [y, *differentiate(graph, b.reduce_sum(b.mul(y, w), axes=None), [x])]
    return graph


def torch_value_and_gradient(name: str, x: np.ndarray, w: np.ndarray, attrs: dict):
    torch = require("torch")
    tensor = torch.tensor(x, requires_grad=True)
    y = torch_op(torch, name, tensor, **attrs)
    (y * torch.tensor(w)).sum().backward()
    return y.detach().numpy(), tensor.grad.numpy()


@pytest.mark.parametrize(("row", "case", "dtype"), cases([ROWS[name] for name in OPS], dtypes=("f64",)))
def test_values_and_gradients_match_torch(row: OpRow, case: Case, dtype: str):
    (x,) = make_inputs(row, case, dtype, SIZES)
    attrs = concrete_attrs(case.attrs, SIZES)
    w = np.random.default_rng(1).standard_normal(x.shape)
    value, gradient = NumpyBackend().compile(gradient_graph(row.name, case.shapes[0], case.attrs))(x, w)
    expected_value, expected_gradient = torch_value_and_gradient(row.name, x, w, attrs)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-10, atol=1e-12)


def lanes_with_zeros(rng, shape, axis: int, zeros: int) -> np.ndarray:
    """Values of magnitude 0.5 to 1.5, either sign, with exactly ``zeros`` zeros in every lane along ``axis``."""
    lanes = np.moveaxis(rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape), axis, -1).copy()
    for lane in np.ndindex(*lanes.shape[:-1]):
        lanes[lane + (rng.choice(lanes.shape[-1], zeros, replace=False),)] = 0.0
    return np.moveaxis(lanes, -1, axis)


def finite_difference(run, x: np.ndarray, w: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """``d sum(op(x) * w)/dx`` by central differences (cumprod is a polynomial: exact up to rounding)."""
    gradient = np.zeros_like(x)
    for position in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[position] += step
        down[position] -= step
        gradient[position] = (np.sum(run(up, w)[0] * w) - np.sum(run(down, w)[0] * w)) / (2 * step)
    return gradient


@pytest.mark.parametrize("zeros", [0, 1, 2, 3])
@pytest.mark.parametrize(("shape", "traced", "axis", "reverse"), [
    ((4, 6), ("N", 6), 1, False),
    ((4, 6), ("N", 6), -1, True),
    ((5, 3), ("N", 3), 0, False),  # the scanned axis symbolic
    ((5, 3), ("N", 3), 0, True),
    ((2, 5, 3), (2, "N", 3), 1, True),
])
def test_cumprod_gradient_with_zeros_matches_torch_and_finite_differences(shape, traced, axis, reverse, zeros):
    rng = np.random.default_rng(zeros * 10 + axis + 3 * reverse)
    x, w = lanes_with_zeros(rng, shape, axis, zeros), rng.standard_normal(shape)
    run = NumpyBackend().compile(gradient_graph("tensor.cumprod", traced, {"axis": axis, "reverse": reverse}))
    value, gradient = run(x, w)
    expected_value, expected_gradient = torch_value_and_gradient("tensor.cumprod", x, w, {"axis": axis, "reverse": reverse})
    np.testing.assert_array_equal(value, expected_value)  # one product after another, as torch's CPU kernel
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gradient, finite_difference(run, x, w), rtol=1e-6, atol=1e-8)


def test_cumprod_gradient_is_not_the_division_formula():
    """The naive ``reverse_cumsum(g y) / x`` is NaN or inf at a zero, and 0 where the true gradient is not."""
    x, w = np.array([[2.0, 0.0, 3.0, 0.5]]), np.array([[1.0, 1.0, 1.0, 1.0]])
    (_, gradient) = NumpyBackend().compile(gradient_graph("tensor.cumprod", (1, 4), {"axis": 1, "reverse": False}))(x, w)
    # y = [2, 0, 0, 0]; dy_i/dx_1 = 2 (i = 1), 2 * 3 (i = 2), 2 * 3 * 0.5 (i = 3); x_0 sees only y_0; later x see x_1 = 0
    np.testing.assert_array_equal(gradient, [[1.0, 2.0 + 6.0 + 3.0, 0.0, 0.0]])


def second_order_graph(traced, axis: int, reverse: bool) -> Graph:
    """``(x, w, v) -> <d sum(cumprod(x) * w)/dx, v>`` and its gradient w.r.t. ``x``."""
    graph = gradient_graph("tensor.cumprod", traced, {"axis": axis, "reverse": reverse})
    x = graph.inputs[0]
    v = graph.add_input(TensorType(traced, "f64"), "v")
    b = Builder(graph)
    inner = b.reduce_sum(b.mul(graph.outputs[1], v), axes=None)
    graph.outputs = [inner, *differentiate(graph, inner, [x])]
    return graph


@pytest.mark.parametrize("zeros", [0, 1])
@pytest.mark.parametrize("reverse", [False, True])
def test_cumprod_second_derivative_with_at_most_one_zero_matches_torch(zeros, reverse):
    """Each branch of the rule is a polynomial (or one over a nonzero ``x_k``) in ``x`` near the point, so the gradient
    differentiates exactly. (With two zeros in a lane, the derivative of the second zero's gradient w.r.t. the first
    zero is dropped: that gradient is 0 to first order. Torch's double backward keeps it.)"""
    torch = require("torch")
    rng = np.random.default_rng(7 + zeros + 2 * reverse)
    x, w, v = lanes_with_zeros(rng, (3, 5), 1, zeros), rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    inner, second = NumpyBackend().compile(second_order_graph(("N", 5), 1, reverse))(x, w, v)
    tensor = torch.tensor(x, requires_grad=True)
    loss = (torch_op(torch, "tensor.cumprod", tensor, axis=1, reverse=reverse) * torch.tensor(w)).sum()
    (gradient,) = torch.autograd.grad(loss, tensor, create_graph=True)
    (gradient * torch.tensor(v)).sum().backward()
    np.testing.assert_allclose(inner, float((gradient * torch.tensor(v)).sum().detach()), rtol=1e-12)
    np.testing.assert_allclose(second, tensor.grad.numpy(), rtol=1e-10, atol=1e-12)


SPECIAL = np.array([-np.inf, -2.0, -1.0, -0.5, -0.0, 0.0, 1e-300, 0.5, 1.0, 2.0, np.inf, np.nan])


@pytest.mark.parametrize("name", ["tensor.atan", "tensor.asin", "tensor.acos"])
def test_special_values_and_their_gradients_match_torch(name):
    """+-1 (an infinite slope for asin and acos), outside [-1, 1] (NaN), +-inf (atan: +-pi/2, slope 0), NaN, signed zeros."""
    w = np.ones_like(SPECIAL)
    with np.errstate(invalid="ignore", divide="ignore"):
        value, gradient = NumpyBackend().compile(gradient_graph(name, SPECIAL.shape, {}))(SPECIAL, w)
    expected_value, expected_gradient = torch_value_and_gradient(name, SPECIAL, w, {})
    np.testing.assert_allclose(value, expected_value, rtol=3e-16, atol=0)  # a libm ulp apart at most; NaN and inf equal
    np.testing.assert_array_equal(np.signbit(value[~np.isnan(value)]), np.signbit(expected_value[~np.isnan(expected_value)]))
    np.testing.assert_allclose(gradient, expected_gradient, rtol=3e-16, atol=0)


@pytest.mark.parametrize("dtype", ["i32", "i64", "f32"])
def test_cumprod_along_a_symbolic_dim_serves_every_size(dtype: str):
    graph = Graph("cumprod")
    graph.outputs = [Builder(graph).cumprod(graph.add_input(TensorType(("N", 2), dtype), "x"), axis=0, reverse=True)]
    run = NumpyBackend().compile(graph)
    for n in (0, 1, 5):
        x = (np.arange(2 * n).reshape(n, 2) % 5 - 2).astype(graph.inputs[0].type.dtype.numpy)
        (result,) = run(x)
        expected = np.array([[np.prod(x[i:, k]) for k in range(2)] for i in range(n)]).reshape(n, 2)
        assert result.dtype == x.dtype
        np.testing.assert_array_equal(result, expected)


def test_cumprod_prints_parses_and_folds():
    graph = Graph("fold")
    b = Builder(graph)
    values = np.array([[2.0, -3.0, 0.0], [0.5, 4.0, -1.0]])
    graph.outputs = [b.cumprod(b.constant(values, "f64"), axis=1, reverse=True), b.atan(b.constant(values, "f64"))]
    text = print_graph(graph)
    assert '"tensor.cumprod"' in text and "{axis = 1, reverse = true}" in text
    parsed = parse(text)
    verify(parsed)
    assert print_graph(parsed) == text
    assert ConstantFold().run(graph)
    assert [op.name for op in graph.ops] == ["tensor.constant", "tensor.constant"]
    np.testing.assert_array_equal(graph.ops[0].attrs["value"], [[0.0, -0.0, 0.0], [-2.0, -4.0, -1.0]])
    np.testing.assert_array_equal(graph.ops[1].attrs["value"], np.arctan(values))


@pytest.mark.parametrize(("name", "shape", "dtype", "attrs", "message"), [
    ("atan", (3,), "i32", {}, "tensor.atan needs a floating-point operand"),
    ("asin", (3,), "bool", {}, "tensor.asin needs a floating-point operand"),
    ("acos", (3,), "i64", {}, "tensor.acos needs a floating-point operand"),
    ("cumprod", (), "f32", {}, r"tensor.cumprod needs a numeric operand of rank >= 1, got .*; reshape it to one element, \(1,\)"),
    ("cumprod", (3,), "bool", {}, "tensor.cumprod needs a numeric operand of rank >= 1, got .*; cast it to an integer or float"),
    ("cumprod", (2, 3), "f32", {"axis": -3}, r"Dimension out of range \(expected to be in range of \[-2, 1\], but got -3\)"),
])
def test_shape_rules_refuse_what_the_ops_do_not_mean(name, shape, dtype, attrs, message):
    graph = Graph(name)
    with pytest.raises(ShapeError, match=message):
        Builder(graph).op(f"tensor.{name}", graph.add_input(TensorType(shape, dtype), "x"), **attrs)
