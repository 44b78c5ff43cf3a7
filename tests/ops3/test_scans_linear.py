"""The running scans as IR ops: ``tensor.logcumsumexp`` (with its VJP's ``tensor.decayed_cumsum``) and
``tensor.cumargmax``/``cumargmin`` against PyTorch 2.13 in float64, and what the op table cannot show.

logcumsumexp both ways (torch's flipped for ``reverse``): values and gradients on inputs spread over +-1e3 and near
1e300, its second derivative against torch's double backward, -inf prefixes (torch's gradient is NaN there, kiln's 0;
equal elsewhere), finite differences of the decayed cumsum in both operands. cummax/cummin on lanes of 1000 with ties, signed
zeros and NaN: values, indices and gradients as torch's; logcumsumexp along a symbolic scanned axis (one executable,
every length), cummax's clear refusal there. The
frontend traces one op per scan (no log-depth network), print/parse, and the shape rules' refusals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from oracles import require_torch
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir import Builder, Graph, TensorType, parse, print_graph, verify

torch = require_torch()


def torch_logcumsumexp(x, axis: int, reverse: bool):
    return torch.flip(torch.logcumsumexp(torch.flip(x, (axis,)), axis), (axis,)) if reverse else torch.logcumsumexp(x, axis)


def gradient_graph(shape, axis: int, reverse: bool, order: int = 1) -> Graph:
    """``(x, w, v) -> (logcumsumexp(x), d sum(y w)/dx)``, and with ``order=2`` the gradient of ``<dx, v>`` too."""
    graph = Graph("logcumsumexp")
    x, w, v = (graph.add_input(TensorType(shape, "f64"), hint) for hint in "xwv")
    b = Builder(graph)
    y = b.logcumsumexp(x, axis=axis, reverse=reverse)
    (gradient,) = differentiate(graph, b.reduce_sum(b.mul(y, w), axes=None), [x])
    graph.outputs = [y, gradient]
    if order == 2:
        graph.outputs.append(differentiate(graph, b.reduce_sum(b.mul(gradient, v), axes=None), [x])[0])
    return graph


def torch_results(x, w, v, axis: int, reverse: bool):
    tensor = torch.tensor(x, requires_grad=True)
    y = torch_logcumsumexp(tensor, axis, reverse)
    (gradient,) = torch.autograd.grad((y * torch.tensor(w)).sum(), tensor, create_graph=True)
    (second,) = torch.autograd.grad((gradient * torch.tensor(v)).sum(), tensor)
    return y.detach().numpy(), gradient.detach().numpy(), second.numpy()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(("shape", "traced", "axis"), [((4, 9), ("N", 9), 1), ((7, 3), ("N", 3), 0), ((2, 6, 3), (2, "N", 3), 1)])
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_logcumsumexp_values_gradients_and_second_derivatives_match_torch(shape, traced, axis, reverse, scale):
    rng = np.random.default_rng(int(scale) + axis + 2 * reverse)
    x, w, v = rng.standard_normal(shape) * scale, rng.standard_normal(shape), rng.standard_normal(shape)
    value, gradient, second = NumpyBackend().compile(gradient_graph(traced, axis, reverse, order=2))(x, w, v)
    expected = torch_results(x, w, v, axis, reverse)
    np.testing.assert_allclose(value, expected[0], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(gradient, expected[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(second, expected[2], rtol=1e-9, atol=1e-11)


def test_logcumsumexp_gradient_near_the_largest_floats_is_torchs():
    """Inputs near 1e300: exp of them overflows, the weights do not."""
    x = np.array([[1e300, 1e300, -1e300, 1e300 * (1 + 2**-50)], [-1e300, 5.0, 1e300, -3.0]])
    w = np.array([[1.0, 2.0, 3.0, -4.0], [0.5, -1.0, 2.0, 1.0]])
    value, gradient = NumpyBackend().compile(gradient_graph((2, 4), 1, False))(x, w, w)
    expected = torch_results(x, w, w, 1, False)
    np.testing.assert_array_equal(value, expected[0])
    np.testing.assert_allclose(gradient, expected[1], rtol=1e-14, atol=0)


@pytest.mark.parametrize("reverse", [False, True])
def test_minus_infinity_gets_no_gradient_where_torchs_is_nan(reverse):
    x = np.array([[-math.inf, -math.inf, 0.5, -math.inf, 2.0, -math.inf], [-math.inf] * 6, [1.0, -math.inf, 3.0, 0.0, -2.0, 1.0]])
    x = np.flip(x, 1).copy() if reverse else x
    w = np.random.default_rng(5).standard_normal(x.shape)
    value, gradient = NumpyBackend().compile(gradient_graph(x.shape, 1, reverse))(x, w, w)
    expected_value, expected_gradient, _ = torch_results(x, w, w, 1, reverse)
    np.testing.assert_array_equal(value, expected_value)
    torch_nan = np.isnan(expected_gradient)
    assert torch_nan.any() and not np.isnan(gradient).any()
    np.testing.assert_array_equal(gradient[torch_nan], 0.0)  # only -inf inputs of a -inf prefix
    assert np.all(x[torch_nan] == -math.inf)
    np.testing.assert_allclose(gradient[~torch_nan], expected_gradient[~torch_nan], rtol=1e-13, atol=1e-15)


def finite_difference(run, arrays, index: int, step: float = 1e-6) -> np.ndarray:
    """``d sum(run(arrays)[0] * w)/d arrays[index]`` (``w`` the last array) by central differences."""
    gradient = np.zeros_like(arrays[index])
    for position in np.ndindex(*gradient.shape):
        up, down = [a.copy() for a in arrays], [a.copy() for a in arrays]
        up[index][position] += step
        down[index][position] -= step
        gradient[position] = (np.sum(run(*up)[0] * arrays[-1]) - np.sum(run(*down)[0] * arrays[-1])) / (2 * step)
    return gradient


@pytest.mark.parametrize("reverse", [False, True])
def test_decayed_cumsum_gradients_match_finite_differences(reverse):
    graph = Graph("decayed")
    g, y, w = (graph.add_input(TensorType((3, 5), "f64"), hint) for hint in ("g", "y", "w"))
    b = Builder(graph)
    t = b.decayed_cumsum(g, y, axis=1, reverse=reverse)
    graph.outputs = [t, *differentiate(graph, b.reduce_sum(b.mul(t, w), axes=None), [g, y])]
    run = NumpyBackend().compile(graph)
    rng = np.random.default_rng(int(reverse))
    arrays = [rng.standard_normal((3, 5)), np.sort(rng.standard_normal((3, 5)), axis=1)[:, ::-1 if reverse else 1].copy(),
              rng.standard_normal((3, 5))]
    _, dg, dy = run(*arrays)
    np.testing.assert_allclose(dg, finite_difference(run, arrays, 0), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dy, finite_difference(run, arrays, 1), rtol=1e-7, atol=1e-9)


def ties_and_nans(shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    x[rng.random(shape) < 0.15] = -0.0
    x[rng.random(shape) < 0.05] = math.nan
    return x


@pytest.mark.parametrize("name", ["cummax", "cummin"])
def test_cummax_cummin_on_long_lanes_match_torch(name):
    """Values, indices and the gradient (scattered to the selected elements) as torch's, on lanes of 1000."""
    x, w = ties_and_nans((3, 1000), 1), np.random.default_rng(1).standard_normal((3, 1000))
    values, indices, gradient = kiln.compile(lambda x, w: (*getattr(x, name)(1), kiln.grad(lambda t: (getattr(t, name)(1)[0] * w).sum())(x)),
                                             batch_dim=None)(x, w)
    tensor = torch.tensor(x, requires_grad=True)
    expected = getattr(torch, name)(tensor, 1)
    (expected.values * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(values, expected.values.detach().numpy())
    np.testing.assert_array_equal(np.signbit(values), np.signbit(expected.values.detach().numpy()))
    np.testing.assert_array_equal(indices, expected.indices.numpy())
    np.testing.assert_allclose(gradient, tensor.grad.numpy(), rtol=1e-13, atol=0)  # scatter-adds in another order


def test_logcumsumexp_along_a_symbolic_scanned_axis_serves_every_length():
    compiled = kiln.compile(lambda x: x.logcumsumexp(0))  # dim 0 symbolic
    for rows in (1, 2, 7, 40):
        x = np.random.default_rng(rows).standard_normal((rows, 3)) * 100
        np.testing.assert_allclose(compiled(x), torch.logcumsumexp(torch.from_numpy(x), 0).numpy(), rtol=1e-14, atol=1e-14)
    assert len(compiled.variants) == 1


def test_cummax_along_a_symbolic_dim_is_refused_at_the_users_line():
    with pytest.raises(kiln.KilnError, match=r"(?s)test_scans_linear.py:\d+ .*cummax along the symbolic dim N .*scan along a static dim"):
        kiln.trace(lambda x: x.cummax(0).values, kiln.TensorSpec(("N", 3)))


def test_each_scan_traces_to_one_op():
    """No log-depth network of slices and selects: one scan op each (cummax/cummin gather their values)."""
    graph = kiln.trace(lambda x: (x.cummax(1).values, x.cummin(0).indices, x.logcumsumexp(-1)), kiln.TensorSpec((8, 64)))
    names = [op.name for op in graph.ops]
    assert names.count("tensor.cumargmax") == names.count("tensor.cumargmin") == names.count("tensor.logcumsumexp") == 1
    assert not {"tensor.concat", "tensor.slice", "tensor.where"} & set(names)


def test_scans_print_and_parse():
    graph = Graph("scans")
    x = graph.add_input(TensorType(("N", 4), "f32"), "x")
    b = Builder(graph)
    total = b.logcumsumexp(x, axis=1, reverse=True)
    graph.outputs = [total, b.decayed_cumsum(x, total, axis=1), b.cumargmax(x, axis=0), b.cumargmin(x)]
    text = print_graph(graph)
    assert '"tensor.cumargmax"(%x) {axis = 0} : (tensor<Nx4xf32>) -> tensor<Nx4xi64>' in text
    parsed = parse(text)
    verify(parsed)
    assert print_graph(parsed) == text


@pytest.mark.parametrize(("name", "types", "message"), [
    ("logcumsumexp", [((3,), "i32")], r"tensor.logcumsumexp needs a floating-point operand of rank >= 1, got .*; cast it to a float"),
    ("logcumsumexp", [((), "f32")], r"reshape it to one element"),
    ("cumargmax", [((3,), "bool")], r"tensor.cumargmax needs a numeric operand .*cast it to an integer or float"),
    ("cumargmin", [((2, 3), "f32")], r"Dimension out of range \(expected to be in range of \[-2, 1\], but got -3\)"),
    ("decayed_cumsum", [((2, 3), "f32"), ((2, 3), "f64")], r"the values and the log decay of one type"),
])
def test_shape_rules_refuse_what_the_ops_do_not_mean(name, types, message):
    graph = Graph(name)
    attrs = {"axis": -3} if name == "cumargmin" else {}
    operands = [graph.add_input(TensorType(shape, dtype), f"x{i}") for i, (shape, dtype) in enumerate(types)]
    with pytest.raises(ShapeError, match=message):
        Builder(graph).op(f"tensor.{name}", *operands, **attrs)


def test_vmap_of_the_logcumsumexp_gradient_is_the_per_example_gradient():
    """``kiln.vmap(kiln.grad(...))``: the gradient's ``tensor.decayed_cumsum`` batched (its values and log decay)."""
    x, w = np.random.default_rng(9).standard_normal((4, 3, 6)) * 50, np.random.default_rng(10).standard_normal((3, 6))

    def gradient(example):
        return kiln.grad(lambda t: (t.logcumsumexp(1) * kiln.tensor(w)).sum())(example)

    batched = np.asarray(kiln.vmap(gradient)(x))
    for example in range(4):
        tensor = torch.tensor(x[example], requires_grad=True)
        (torch.logcumsumexp(tensor, 1) * torch.tensor(w)).sum().backward()
        np.testing.assert_allclose(batched[example], tensor.grad.numpy(), rtol=1e-10, atol=1e-12)
