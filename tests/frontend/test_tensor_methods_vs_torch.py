"""Tensor methods (reductions, elementwise math, shape) and ``F.normalize``/``cosine_similarity``/``pairwise_distance``/
``logsumexp`` against PyTorch in float64: values, and gradients by ``kiln.grad``, to rtol 1e-10.

Edge values are PyTorch's too: tied maxima, zero vectors (the norm's 0 subgradient), constant rows (std), a row of
-inf in ``logsumexp`` (value -inf, gradient NaN as PyTorch's), infinities in ``max(dim)``. A symbolic batch dim
(``TensorSpec(("N", 4))``) runs at two batch sizes, gradients traced into the same graph.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4, 5))
Y = RNG.standard_normal((3, 4, 5))
INF = math.inf


def _same(name, *args, **kwargs):
    """The same method call on a kiln and a torch tensor."""
    return lambda t: getattr(t, name)(*args, **kwargs)


# Reductions ------------------------------------------------------------------------


DIMS = [None, 0, -1, 1, (0, 2), (-1, -3)]


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("name", ["var", "std"])
def test_var_std_over_dims(name, dim, keepdim):
    _check(_same(name, dim, keepdim=keepdim), _same(name, dim, keepdim=keepdim), X)


@pytest.mark.parametrize(("args", "kwargs"), [
    ((), {"correction": 0}), ((), {"correction": 2}), ((1,), {"correction": 0.5}), ((1, False), {}), ((1, True, True), {}),
    ((False,), {}), ((), {"unbiased": False}), (((0, 1),), {"unbiased": True, "keepdim": True}),
])
@pytest.mark.parametrize("name", ["var", "std"])
def test_var_std_correction_and_unbiased(name, args, kwargs):
    _check(_same(name, *args, **kwargs), _same(name, *args, **kwargs), X)


def test_var_with_no_degrees_of_freedom_is_inf_as_torch():
    torch = require("torch")
    x = X[:, :2, 0]
    with pytest.warns(UserWarning):
        expected = torch.tensor(x).var(1, correction=3).numpy()
    with np.errstate(divide="ignore"):
        got = kiln.compile(lambda t: t.var(1, correction=3))(x)
    np.testing.assert_array_equal(got, expected)
    assert np.isinf(got).all()


def test_std_of_a_constant_row_has_zero_gradient_as_torch():
    x = X[0].copy()
    x[1] = 2.5
    x[3] = 0.0
    _check(_same("std", 1), _same("std", 1), x)
    grad = kiln.grad(lambda t: t.std(1).sum())(x)
    assert np.isfinite(grad).all() and (grad[1] == 0).all() and (grad[3] == 0).all()


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [None, 0, -1, (1, 2), [0, -1]])
@pytest.mark.parametrize("p", [2, "fro", 1, INF, -INF, 3, 0.5, 0, -1.5])
def test_norm_over_dims(p, dim, keepdim):
    _check(_same("norm", p, dim, keepdim), lambda t: t.norm(p, tuple(dim) if isinstance(dim, list) else dim, keepdim), X, grad=p != 0)


@pytest.mark.parametrize("p", [2, "fro", 1, INF, -INF, 3, 0.5, -1.5])
def test_norm_gradient_at_zero_is_torch_subgradient_not_nan(p):
    """A zero row, and zeros inside nonzero rows: PyTorch's gradient is 0 there for every p, ties share it for inf."""
    x = X[0].copy()
    x[0] = 0.0
    x[2, :2] = 0.0
    x[3] = [3.0, -3.0, 1.0, 0.0, 3.0]  # a three-way tie for the largest magnitude
    _check(_same("norm", p, 1), _same("norm", p, 1), x)
    assert np.isfinite(kiln.grad(lambda t: t.norm(p, 1).sum())(x)).all()


def test_norm_of_everything_is_a_scalar_and_keeps_the_dtype():
    torch = require("torch")
    x = X.astype(np.float32)
    got = kiln.compile(lambda t: t.norm())(x)
    assert got.shape == () and got.dtype == np.float32
    np.testing.assert_allclose(got, torch.tensor(x).norm().numpy(), rtol=1e-6)


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, -1, 1, (1, 2), (0, -1)])
def test_logsumexp_over_dims(dim, keepdim):
    _check(_same("logsumexp", dim, keepdim), _same("logsumexp", dim, keepdim), X)
    _check(lambda t: F.logsumexp(t, dim, keepdim=keepdim), lambda t: t.logsumexp(dim, keepdim=keepdim), X)


@pytest.mark.parametrize("dim", [1, -1])
def test_logsumexp_edge_rows_as_torch(dim):
    """Tied maxima, a row of -inf (value -inf, gradient NaN in that row only, as PyTorch's), a row holding +inf, and
    values whose exp overflows: shifted by the max, nothing overflows and no other row sees a NaN."""
    x = np.array([[1.0, 3.0, 3.0, -2.0], [-INF, -INF, -INF, -INF], [0.0, INF, 1.0, 2.0], [1000.0, 1000.0, -5.0, 999.0],
                  [-INF, 2.0, -INF, 2.0], [-1000.0, -1000.0, -1000.0, -1001.0]])
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) and inf * 0 in the -inf row, as in PyTorch
        _check(_same("logsumexp", dim), _same("logsumexp", dim), x)
        value = kiln.compile(lambda t: t.logsumexp(dim))(x)
        grad = kiln.grad(lambda t: t.logsumexp(dim).sum())(x)
    assert value[1] == -INF and value[2] == INF
    assert np.isnan(grad[1]).all() and np.isfinite(np.delete(grad, [1, 2], axis=0)).all()
    np.testing.assert_allclose(grad[0], [np.exp(1 - value[0]), np.exp(3 - value[0]), np.exp(3 - value[0]), np.exp(-2 - value[0])], rtol=1e-12)


def test_logsumexp_promotes_integers_to_float32():
    got = kiln.compile(lambda t: t.logsumexp(0))(np.array([1, 2, 3], np.int64))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.log(np.exp([1.0, 2.0, 3.0]).sum()), rtol=1e-6)


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [None, 0, -1])
def test_prod(dim, keepdim):
    torch_fn = (lambda t: t.prod()) if dim is None else _same("prod", dim, keepdim)
    kiln_fn = (lambda t: t.prod()) if dim is None else _same("prod", dim, keepdim)
    _check(kiln_fn, torch_fn, X)


def test_prod_gradient_with_zeros_as_torch():
    x = X[0].copy()
    x[1, 2] = 0.0  # one zero: only it has a gradient
    x[2, [0, 3]] = 0.0  # two zeros: none has
    _check(_same("prod", 1), _same("prod", 1), x)


def test_prod_of_integers_is_int64_as_torch():
    torch = require("torch")
    x = np.array([[2, -3, 4], [5, 0, 1]], np.int32)
    got = kiln.compile(lambda t: t.prod(1))(x)
    np.testing.assert_array_equal(got, torch.tensor(x).prod(1).numpy())
    assert got.dtype == np.int64


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1, -3])
@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_dim_return_values_and_indices(name, dim, keepdim):
    _check(_same(name, dim, keepdim), _same(name, dim, keepdim), X)
    _check(lambda t: getattr(t, name)(dim=dim, keepdim=keepdim).values, lambda t: getattr(t, name)(dim=dim, keepdim=keepdim).values, X)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_dim_ties_give_the_first_index_the_gradient(name):
    x = RNG.integers(-1, 2, (6, 5)).astype(np.float64)
    _check(_same(name, 1), _same(name, 1), x)
    _check(_same(name, 0), _same(name, 0), x)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_dim_keep_infinities_and_nan_as_torch(name):
    """An infinite loser must not turn the masked sum into inf * 0 = NaN; a NaN wins, as in PyTorch."""
    x = np.array([[0.0, 2.0, -INF, 1.0, INF], [1.0, INF, 3.0, -INF, -0.0], [-0.0, 1.0, 1.0, -1.0, -1.0], [np.nan, 1.0, 2.0, -INF, 3.0]])
    _check(_same(name, 1), _same(name, 1), x)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_result_is_a_named_pair(name):
    graph = kiln.trace(lambda t: getattr(t, name)(1), kiln.TensorSpec((3, 4), "float64"))
    assert len(graph.outputs) == 2

    def fields(t):
        result = getattr(t, name)(-1, keepdim=True)
        values, indices = result
        assert result.values is values and result.indices is indices and result[0] is values
        assert str(indices.dtype) == "kiln.int64" and indices.shape == (3, 1) and values.shape == (3, 1)
        return values

    kiln.trace(fields, kiln.TensorSpec((3, 4), "float64"))


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_without_dim_reduce_everything_and_ties_share_the_gradient(name):
    x = RNG.integers(-1, 2, (4, 5)).astype(np.float64)
    _check(_same(name), _same(name), x)
    _check(_same(name), _same(name), X)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_with_a_tensor_are_elementwise(name):
    _check(lambda a, b: getattr(a, name)(b), lambda a, b: getattr(a, name)(b), X, Y)


def test_max_min_of_integers():
    torch = require("torch")
    x = np.array([[3, -7, 3], [-2**31, 5, 0]], np.int32)
    got = kiln.compile(lambda t: tuple(t.max(1)) + tuple(t.min(0, keepdim=True)) + (t.max(), t.min()))(x)
    want = [*torch.tensor(x).max(1), *torch.tensor(x).min(0, keepdim=True), torch.tensor(x).max(), torch.tensor(x).min()]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w.numpy())
        assert g.dtype == w.numpy().dtype


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [None, 0, 1, -1])
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(name, dim, keepdim):
    torch = require("torch")
    for x in (X[0], RNG.integers(-1, 2, (4, 5)).astype(np.float64), np.array([[2**31 - 1, -2**31, -2**31, 0]] * 2, np.int32)):
        got = kiln.compile(lambda t: getattr(t, name)(dim, keepdim))(x)
        want = getattr(torch.tensor(x), name)(dim, keepdim).numpy()
        np.testing.assert_array_equal(got, want)
        assert got.shape == want.shape and got.dtype == np.int64


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [None, 0, -1, (0, 1)])
@pytest.mark.parametrize("name", ["all", "any"])
def test_all_any(name, dim, keepdim):
    torch = require("torch")
    for x in (np.array([[True, False, True], [True, True, True]]), np.array([[0.0, np.nan, 2.0], [1.0, -1.0, 3.0]]),
              np.array([[0, 0, 0], [1, 0, 2]], np.int64)):
        got = kiln.compile(lambda t: getattr(t, name)(dim, keepdim))(x)
        want = getattr(torch.tensor(x), name)(dim, keepdim) if dim is not None else getattr(torch.tensor(x), name)()
        want = want.numpy() if dim is not None or not keepdim else want.numpy().reshape((1, 1))
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.bool_


def test_amax_function():
    _check(lambda t: F.amax(t, (0, -1), keepdim=True), lambda t: t.amax((0, -1), keepdim=True), X)


# Elementwise -------------------------------------------------------------------------


POSITIVE = np.abs(X) + 0.1


@pytest.mark.parametrize(("name", "kiln_fn", "torch_fn", "arrays"), [
    ("neg", _same("neg"), _same("neg"), (X,)),
    ("__neg__", lambda t: -t, lambda t: -t, (X,)),
    ("pow scalar", _same("pow", 3), _same("pow", 3), (X,)),
    ("pow half", _same("pow", 0.5), _same("pow", 0.5), (POSITIVE,)),
    ("pow tensor", lambda a, b: a.pow(b), lambda a, b: a.pow(b), (POSITIVE, Y)),
    ("__pow__", lambda t: t**2, lambda t: t**2, (X,)),
    ("__rpow__", lambda t: 2.0**t, lambda t: 2.0**t, (X,)),
    ("reciprocal", _same("reciprocal"), _same("reciprocal"), (X,)),
    ("rsqrt", _same("rsqrt"), _same("rsqrt"), (POSITIVE,)),
    ("square", _same("square"), _same("square"), (X,)),
    ("sign", lambda t: t.sign() * t, lambda t: t.sign() * t, (np.concatenate([X, np.zeros((3, 4, 1))], -1),)),
    ("clamp_min", _same("clamp_min", -0.3), _same("clamp_min", -0.3), (X,)),
    ("clamp_max", _same("clamp_max", 0.4), _same("clamp_max", 0.4), (X,)),
    ("clamp_min tensor", lambda a, b: a.clamp_min(b), lambda a, b: a.clamp_min(b), (X, Y)),
    ("clamp_max tensor", lambda a, b: a.clamp_max(b), lambda a, b: a.clamp_max(b), (X, Y)),
    ("clamp tensors", lambda a, b: a.clamp(b - 0.5, b + 0.5), lambda a, b: a.clamp(b - 0.5, b + 0.5), (X, Y)),
    ("clamp mixed", lambda a, b: a.clamp(min=-0.5, max=b), lambda a, b: a.clamp(min=torch_tensor(-0.5), max=b), (X, Y)),
    ("where", lambda a, b: a.where(a > b, b), lambda a, b: a.where(a > b, b), (X, Y)),
    ("where scalar", lambda a: a.where(a > 0, 0.25), lambda a: a.where(a > 0, 0.25), (X,)),
    ("masked_fill", lambda a, b: a.masked_fill(b > 0, -2.0), lambda a, b: a.masked_fill(b > 0, -2.0), (X, Y)),
    ("masked_fill broadcast", lambda a, b: a.masked_fill(b[0] > 0, 0.0), lambda a, b: a.masked_fill(b[0] > 0, 0.0), (X, Y)),
    ("lerp", lambda a, b: a.lerp(b, 0.3), lambda a, b: a.lerp(b, 0.3), (X, Y)),
    ("lerp far", lambda a, b: a.lerp(b, 0.8), lambda a, b: a.lerp(b, 0.8), (X, Y)),
    ("lerp tensor", lambda a, b, w: a.lerp(b, w), lambda a, b, w: a.lerp(b, w), (X, Y, RNG.uniform(-0.5, 1.5, (4, 5)))),
    ("add alpha", lambda a, b: a.add(b, alpha=2.5), lambda a, b: a.add(b, alpha=2.5), (X, Y)),
    ("add scalar", lambda a: a.add(1.5), lambda a: a.add(1.5), (X,)),
    ("sub alpha", lambda a, b: a.sub(b, alpha=-0.5), lambda a, b: a.sub(b, alpha=-0.5), (X, Y)),
    ("sub", lambda a, b: a.sub(b[0]), lambda a, b: a.sub(b[0]), (X, Y)),
    ("mul", lambda a, b: a.mul(b), lambda a, b: a.mul(b), (X, Y)),
    ("div", lambda a, b: a.div(b), lambda a, b: a.div(b), (X, POSITIVE)),
    ("div scalar", lambda a: a.div(4.0), lambda a: a.div(4.0), (X,)),
])
def test_elementwise(name, kiln_fn, torch_fn, arrays):
    _check(kiln_fn, torch_fn, *arrays)


def torch_tensor(value):
    return require("torch").tensor(value, dtype=require("torch").float64)


def test_sign_values_and_zero_gradient():
    torch = require("torch")
    x = np.array([0.0, -0.0, 2.0, -3.0, INF, -INF, np.nan])
    got = kiln.compile(lambda t: t.sign())(x)
    np.testing.assert_array_equal(got, torch.tensor(x).sign().numpy())
    np.testing.assert_array_equal(kiln.grad(lambda t: (t.sign() * 3.0).sum())(x), np.zeros_like(x))
    ints = np.array([-4, 0, 7], np.int64)
    np.testing.assert_array_equal(kiln.compile(lambda t: t.sign())(ints), [-1, 0, 1])


def test_clamp_gradient_at_the_bounds_is_torch():
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    bound = np.array([-0.5, -0.5, 0.5, 0.5, 1.0])
    _check(lambda a: a.clamp(-0.5, 0.5), lambda a: a.clamp(-0.5, 0.5), x)
    _check(lambda a, b: a.clamp_min(b), lambda a, b: a.clamp_min(b), x, bound)
    _check(lambda a, b: a.clamp_max(b), lambda a, b: a.clamp_max(b), x, bound)


def test_lerp_hits_the_ends_exactly():
    a, b = X[0], Y[0]
    (start, end) = kiln.compile(lambda s, e: (s.lerp(e, 0.0), s.lerp(e, 1.0)))(a, b)
    np.testing.assert_array_equal(start, a)
    np.testing.assert_array_equal(end, b)


def test_masked_fill_with_a_zero_dim_tensor_value():
    _check(lambda a, v: a.masked_fill(a > 0, v), lambda a, v: a.masked_fill(a > 0, v), X, np.array(0.75))


def test_reciprocal_and_rsqrt_of_integers_are_float32():
    got = kiln.compile(lambda t: (t.reciprocal(), t.rsqrt()))(np.array([1, 2, 4], np.int64))
    np.testing.assert_allclose(got[0], [1.0, 0.5, 0.25])
    np.testing.assert_allclose(got[1], [1.0, 2**-0.5, 0.5], rtol=1e-6)
    assert got[0].dtype == got[1].dtype == np.float32


# Shape -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kiln_fn", "torch_fn", "arrays"), [
    ("view_as", lambda a, b: a.view_as(b), lambda a, b: a.view_as(b), (X, Y.reshape(12, 5))),
    ("reshape_as", lambda a, b: a.reshape_as(b), lambda a, b: a.reshape_as(b), (X, Y.reshape(5, 12))),
    ("expand_as", lambda a, b: a.expand_as(b), lambda a, b: a.expand_as(b), (X[:1, :, :1], Y)),
    ("repeat", _same("repeat", 2, 1, 3), _same("repeat", 2, 1, 3), (X,)),
    ("repeat tuple", _same("repeat", (1, 2, 1)), _same("repeat", (1, 2, 1)), (X,)),
    ("repeat new dims", _same("repeat", 2, 3, 1, 1, 2), _same("repeat", 2, 3, 1, 1, 2), (X,)),
    ("flip", _same("flip", 0), _same("flip", 0), (X,)),
    ("flip several", _same("flip", 0, -1), _same("flip", 0, -1), (X,)),
    ("flip tuple", _same("flip", (1, 2)), _same("flip", (1, 2)), (X,)),
    ("flip function", lambda t: F.flip(t, (-2,)), _same("flip", -2), (X,)),
    ("movedim", _same("movedim", 0, -1), _same("movedim", 0, -1), (X,)),
    ("movedim tuple", _same("movedim", (0, 2), (2, 0)), _same("movedim", (0, 2), (2, 0)), (X,)),
    ("movedim one", _same("movedim", (-1,), (1,)), _same("movedim", (-1,), (1,)), (X,)),
    ("swapaxes", _same("swapaxes", 0, -1), _same("swapaxes", 0, -1), (X,)),
    ("swapdims", _same("swapdims", 1, 2), _same("swapdims", 1, 2), (X,)),
    ("transpose negative", _same("transpose", -1, -3), _same("transpose", -1, -3), (X,)),
    ("narrow", _same("narrow", 1, 1, 2), _same("narrow", 1, 1, 2), (X,)),
    ("narrow negative", _same("narrow", -1, -3, 2), _same("narrow", -1, -3, 2), (X,)),
    ("softmax", _same("softmax", 1), _same("softmax", 1), (X,)),
    ("softmax last", _same("softmax", -1), _same("softmax", -1), (X,)),
    ("log_softmax", _same("log_softmax", 0), _same("log_softmax", 0), (X,)),
    ("matmul", lambda a, b: a.matmul(b), lambda a, b: a.matmul(b), (X, Y.transpose(0, 2, 1))),
    ("mm", lambda a, b: a.mm(b), lambda a, b: a.mm(b), (X[0], Y[0].T)),
    ("bmm", lambda a, b: a.bmm(b), lambda a, b: a.bmm(b), (X, Y.transpose(0, 2, 1))),
])
def test_shape_methods(name, kiln_fn, torch_fn, arrays):
    _check(kiln_fn, torch_fn, *arrays)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_unbind(dim):
    _check(lambda t: t.unbind(dim), lambda t: t.unbind(dim), X)
    _check(lambda t: F.unbind(t, dim)[1] * 2.0, lambda t: t.unbind(dim)[1] * 2.0, X)


def test_type_as_and_numel_and_len():
    torch = require("torch")
    x32 = X.astype(np.float32)

    def traced(a, b):
        assert a.numel() == 60 and isinstance(a.numel(), int) and len(a) == 3 and len(a[0]) == 4
        return a.type_as(b)

    (got,) = NumpyBackend().compile(kiln.trace(traced, kiln.TensorSpec(X.shape, "float64"), kiln.TensorSpec(X.shape, "float32")))(X, x32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, torch.tensor(X).type_as(torch.tensor(x32)).numpy())


def test_numel_of_a_symbolic_shape_counts_at_run_time():
    graph = kiln.trace(lambda t: (t.numel(), t.sum() / t.numel()), kiln.TensorSpec(("N", 4), "float64"))
    run = NumpyBackend().compile(graph)
    for n in (2, 7):
        x = RNG.standard_normal((n, 4))
        count, mean = run(x)
        assert count == 4 * n and count.dtype == np.float64
        np.testing.assert_allclose(mean, x.mean(), rtol=1e-12)
    kiln.trace(lambda t: t * (t.numel() == 6 and isinstance(t.numel(), int)), kiln.TensorSpec((3, 2), "int64"))
    count, = NumpyBackend().compile(kiln.trace(lambda t: t.numel(), kiln.TensorSpec(("N", 2), "int64")))(np.zeros((3, 2), np.int64))
    assert count == 6 and count.dtype == np.int64


# Functional ------------------------------------------------------------------------------


@pytest.mark.parametrize(("p", "dim"), [(2.0, 1), (2.0, -1), (1.0, 0), (INF, 2), (3.0, (1, 2))])
def test_normalize(p, dim):
    torch = require("torch")
    x = X.copy()
    x[1, :, 2] = 0.0  # a zero vector along dim 1: divided by eps, gradient finite
    _check(lambda t: F.normalize(t, p, dim), lambda t: torch.nn.functional.normalize(t, p, dim), x)
    _check(lambda t: F.normalize(t, p=p, dim=dim, eps=0.5), lambda t: torch.nn.functional.normalize(t, p=p, dim=dim, eps=0.5), x)


@pytest.mark.parametrize("dim", [1, -1, 0])
def test_cosine_similarity(dim):
    torch = require("torch")
    x1, x2 = X.copy(), Y.copy()
    x1[0, :, 1] = 0.0
    x2[2, 3, :] = 0.0  # zero vectors: the norm is clamped to eps and the gradient is finite, as PyTorch's
    _check(lambda a, b: F.cosine_similarity(a, b, dim), lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim), x1, x2)


@pytest.mark.parametrize("dim", [1, -1])
def test_cosine_similarity_below_eps_is_the_clamped_formula(dim):
    """Norms under ``eps`` are clamped: the value is PyTorch's; the gradient is the clamped formula's own (PyTorch's
    ``normalize`` one), where PyTorch's ``cosine_similarity`` clamps out of autograd's sight (see its docstring)."""
    torch = require("torch")
    normalize = torch.nn.functional.normalize
    _check(lambda a, b: F.cosine_similarity(a, b, dim, eps=2.0), lambda a, b: (normalize(a, dim=dim, eps=2.0) * normalize(b, dim=dim, eps=2.0)).sum(dim), X, Y)
    torch_value = torch.nn.functional.cosine_similarity(torch.tensor(X), torch.tensor(Y), dim, eps=2.0).numpy()
    np.testing.assert_allclose(kiln.compile(lambda a, b: F.cosine_similarity(a, b, dim, eps=2.0))(X, Y), torch_value, rtol=1e-12)


def test_cosine_similarity_broadcasts():
    torch = require("torch")
    _check(lambda a, b: F.cosine_similarity(a, b), lambda a, b: torch.nn.functional.cosine_similarity(a, b), X, Y[0, :, :1])
    _check(lambda a, b: F.cosine_similarity(a, b, dim=-1), lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=-1), X[0], Y[0, 0])


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, INF])
def test_pairwise_distance(p, keepdim):
    torch = require("torch")
    pairwise = torch.nn.functional.pairwise_distance
    _check(lambda a, b: F.pairwise_distance(a, b, p, keepdim=keepdim), lambda a, b: pairwise(a, b, p, keepdim=keepdim), X[0], Y[0])
    _check(lambda a, b: F.pairwise_distance(a, b, p, eps=0.0), lambda a, b: pairwise(a, b, p, eps=0.0), X, Y[0])
    same = X[0].copy()
    _check(lambda a, b: F.pairwise_distance(a, b, p), lambda a, b: pairwise(a, b, p), same, same.copy())  # eps keeps it off 0


# A symbolic batch dim ---------------------------------------------------------------------


SYMBOLIC = [
    ("var 0", lambda t: t.var(0)), ("var 1", lambda t: t.var(1, keepdim=True)), ("std", lambda t: t.std(-1, correction=0)),
    ("std all", lambda t: t.std()), ("norm 1", lambda t: t.norm(dim=1)), ("norm all", lambda t: t.norm(1)),
    ("norm inf 0", lambda t: t.norm(INF, 0)), ("logsumexp 0", lambda t: t.logsumexp(0)),
    ("logsumexp 1", lambda t: t.logsumexp(-1, keepdim=True)), ("max 1", lambda t: t.max(1).values),
    ("min 1", lambda t: t.min(-1, keepdim=True)[0]), ("prod", lambda t: t.prod(1)), ("normalize", lambda t: F.normalize(t)),
    ("normalize 0", lambda t: F.normalize(t, dim=0)), ("repeat", lambda t: t.repeat(2, 3)), ("flip", lambda t: t.flip(1)),
    ("movedim", lambda t: t.movedim(0, 1)), ("softmax", lambda t: t.softmax(-1)), ("lerp", lambda t: t.lerp(t * t, 0.25)),
    ("square", lambda t: t.square()), ("masked_fill", lambda t: t.masked_fill(t > 0.5, 0.5)),
]


@pytest.mark.parametrize(("name", "fn"), SYMBOLIC, ids=[name for name, _ in SYMBOLIC])
def test_symbolic_batch_dim(name, fn):
    """One trace over ``(N, 4)``, run at two batch sizes; the gradient of ``sum(f(x)^2)`` traced into the same graph."""
    torch = require("torch")
    spec = kiln.TensorSpec(("N", 4), "float64")
    graph = kiln.trace(lambda t: (fn(t), kiln.grad(lambda u: (fn(u) * fn(u)).sum())(t)), spec)
    run = NumpyBackend().compile(graph)
    for n in (3, 6):
        x = RNG.standard_normal((n, 4))
        value, grad = run(x)
        t = torch.tensor(x, requires_grad=True)
        torch_fn = {"normalize": lambda u: torch.nn.functional.normalize(u), "normalize 0": lambda u: torch.nn.functional.normalize(u, dim=0)}.get(name, fn)
        expected = torch_fn(t)
        (expected * expected).sum().backward()
        np.testing.assert_allclose(value, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "fn"), [("argmin", lambda t: t.argmin(1)), ("all", lambda t: t.all(1)), ("any", lambda t: (t > 1).any(0))])
def test_symbolic_batch_dim_index_and_truth(name, fn):
    torch = require("torch")
    run = NumpyBackend().compile(kiln.trace(fn, kiln.TensorSpec(("N", 4), "float64")))
    for n in (2, 5):
        x = RNG.integers(-1, 2, (n, 4)).astype(np.float64)
        np.testing.assert_array_equal(run(x)[0], fn(torch.tensor(x)).numpy())


# Errors ------------------------------------------------------------------------------------


def _trace(fn, *shapes, dtype="float64"):
    return kiln.trace(fn, *[kiln.TensorSpec(shape, dtype) for shape in shapes])


@pytest.mark.parametrize(("fn", "message"), [
    (lambda t: t.var(2), r"var: dim 2 does not fit tensor<3x4xf64>.*dims run from -2 to 1"),
    (lambda t: t.std(-3), r"std: dim -3 does not fit"),
    (lambda t: t.norm(2, (0, 0)), r"norm: dim \(0, 0\) does not fit.*repeated"),
    (lambda t: t.norm(dim="x"), r"norm: dim must be an int or a tuple of ints, got 'x'"),
    (lambda t: t.norm("nuc", dim=0), r"norm\(p='nuc'\) is over two dims \(a matrix\), got dim=0"),
    (lambda t: t.norm("max"), r"norm: p must be a number, 'fro' or 'nuc', got 'max'"),
    (lambda t: t.logsumexp(5), r"logsumexp: dim 5 does not fit"),
    (lambda t: t.prod(7), r"prod: dim 7 does not fit"),
    (lambda t: t.max((0, 1)), r"max: dim must be one int, got \(0, 1\)"),
    (lambda t: t.min(2), r"min: dim 2 does not fit"),
    (lambda t: t.argmin(-5), r"argmin: dim -5 does not fit"),
    (lambda t: t.all(3), r"all: dim 3 does not fit"),
    (lambda t: t.var(unbiased=True, correction=1), r"unbiased or correction, not both"),
    (lambda t: t.narrow(1, 3, 2), r"narrow: start 3 and length 2 do not fit dim 1 of size 4"),
    (lambda t: t.narrow(2, 0, 1), r"narrow: dim 2 does not fit"),
    (lambda t: t.unbind(-3), r"unbind: dim -3 does not fit"),
    (lambda t: t.movedim((0, 1), 0), r"movedim: source \(0, 1\) and destination 0 name different numbers of dims"),
    (lambda t: t.movedim(0, 4), r"movedim: dim 4 does not fit"),
    (lambda t: t.flip(2), r"flip: dim 2 does not fit"),
    (lambda t: t.swapaxes(0, 2), r"transpose: dim 2 does not fit"),
    (lambda t: t.transpose(0), r"transpose swaps two dims"),
    (lambda t: t.repeat(2), r"repeat: needs a non-negative count per dim of tensor<3x4xf64> \(at least 2\), got \(2,\)"),
    (lambda t: t.repeat(2, -1), r"repeat: needs a non-negative count"),
    (lambda t: t.mm(t.unsqueeze(0)), r"mat2 must be a matrix"),  # torch's words
    (lambda t: t.bmm(t), r"batch1 must be a 3D tensor"),
    (lambda t: t.masked_fill(t.unsqueeze(0) > 0, 1.0), r"masked_fill: mask .* must broadcast to tensor<3x4xf64>"),
    (lambda t: t.div(2.0, rounding_mode="round"), r"rounding_mode must be None, 'floor' or 'trunc', got 'round'"),
    (lambda t: F.cosine_similarity(t, t[:2]), r"cosine_similarity: .* do not broadcast"),
])
def test_bad_arguments_say_what_is_wrong(fn, message):
    with pytest.raises(kiln.TraceError, match=message) as error:
        _trace(fn, (3, 4))
    assert "test_tensor_methods_vs_torch.py" in str(error.value)  # names the user's line


@pytest.mark.parametrize(("fn", "message"), [
    (lambda t: t.max(0), r"max\(dim=0\) of tensor<Nx4xf64>: dim 0 is symbolic \(N\)"),
    (lambda t: t.flip(0), r"flip: dim 0 of tensor<Nx4xf64> is symbolic"),
    (lambda t: t.unbind(0), r"unbind: dim 0 of tensor<Nx4xf64> is symbolic"),
    (lambda t: t.narrow(0, 0, 1), r"narrow: dim 0 of tensor<Nx4xf64> is symbolic"),
    (lambda t: len(t), r"len\(\) of tensor<Nx4xf64>: its first dim N is symbolic"),
])
def test_symbolic_dims_that_cannot_be_used_say_so(fn, message):
    with pytest.raises(kiln.TraceError, match=message):
        _trace(fn, ("N", 4))


def test_float_only_reductions_reject_integers():
    for name in ("var", "std", "norm"):
        with pytest.raises(kiln.TraceError, match=rf"{name} needs a floating-point tensor, got tensor<3xi64>"):
            _trace(lambda t: getattr(t, name)(), (3,), dtype="int64")


def test_len_of_a_zero_dim_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        _trace(lambda t: len(t), ())
