"""``frontend/tensor_extras.py`` against PyTorch in float64: the scatter family, shape methods, special functions
(``erfc``/``erfinv``/``lgamma``/``digamma`` over wide ranges, near +-1 and the poles), reductions and small linear
algebra, the generated in-place forms, result dtypes of int and bool inputs, symbolic batch dims, and the errors of
what a trace cannot give. Values and gradients to rtol 1e-10 (``tensor_parity._check``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import KilnError
from kiln.frontend.tensor import Tensor
from kiln.frontend.tensor_extras import EXTRA_FORWARDED
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(3)
X = RNG.standard_normal((3, 4, 5))
M = RNG.standard_normal((4, 5))
V = RNG.standard_normal(5)


def _same(name, *args, **kwargs):
    return lambda t: getattr(t, name)(*args, **kwargs)


def _index(values):
    """An int64 index: a kiln constant while tracing, a torch tensor for torch (the same call on both)."""
    return lambda t: kiln.tensor(np.asarray(values)) if isinstance(t, Tensor) else require("torch").tensor(np.asarray(values))


def _run(fn):
    """``fn`` compiled for its arrays' static shapes and dtypes (``kiln.compile`` would make dim 0 symbolic)."""
    def run(*arrays):
        graph = kiln.trace(fn, *[kiln.TensorSpec(a.shape, str(a.dtype)) for a in arrays])
        return NumpyBackend().compile(graph)(*arrays)[0]

    return run


def _values_only(fn):
    """The torch twin for ``_check(..., grad=False)`` where torch has no gradient: its input detached."""
    return lambda t: fn(t.detach())


def _twin(build):
    """``build(t, index)`` on kiln and torch with the index made for each."""
    return lambda values: (lambda t: build(t, _index(values)(t)))


# scatter family -------------------------------------------------------------------------

SCATTER_INDEX = np.array([[0, 1, 2, 3, 1], [2, 0, 3, 1, 0], [3, 3, 0, 2, 2]])  # duplicates down each column
UNIQUE_INDEX = np.array([[3, 0, 1, 2, 1], [0, 2, 3, 0, 3]])  # distinct down each column


@pytest.mark.parametrize("dim", [0, -2])
def test_scatter_add_accumulates_duplicates(dim):
    fn = _twin(lambda t, i: t[0].scatter_add(dim, i, t[1][:3] * 2))(SCATTER_INDEX)
    _check(fn, fn, np.stack([M, M * 0.5 + 1]))


def test_scatter_add_reads_only_the_index_extent_of_a_larger_source():
    index = np.array([[1, 0], [0, 2]])
    fn = _twin(lambda t, i: t[0].scatter_add(1, i, t[1]))(index)
    _check(fn, _values_only(fn), np.stack([M, M + 1]), grad=False)  # torch's own backward fails on this shape
    got = kiln.grad(lambda t: (t[0].scatter_add(1, kiln.tensor(index), t[1]) * M).sum())(np.stack([M, M + 1]))
    expected_source = np.zeros_like(M)
    expected_source[:2, :2] = np.take_along_axis(M[:2], index, 1)
    np.testing.assert_allclose(got, np.stack([M, expected_source]), rtol=1e-14)


@pytest.mark.parametrize("dim", [0, 1])
def test_scatter_assigns_a_source_at_unique_indices(dim):
    index = UNIQUE_INDEX if dim == 0 else np.array([[4, 0, 2], [1, 3, 0], [0, 1, 4], [2, 4, 3]])
    fn = _twin(lambda t, i: t[0].scatter(dim, i, t[1][: i.shape[0], : i.shape[1]]))(index)
    _check(fn, fn, np.stack([M, -M]))


def test_scatter_of_a_value_writes_it_even_at_duplicate_indices():
    fn = _twin(lambda t, i: t.scatter(0, i, 2.5))(SCATTER_INDEX)
    _check(fn, fn, M)
    fn = _twin(lambda t, i: t.scatter(1, i, value=-1.0))(np.array([[0, 0], [3, 3], [1, 4], [2, 2]]))
    _check(fn, fn, M)


def test_scatter_with_duplicates_writes_their_mean():
    index = np.array([[0, 0, 0]])
    got = _run(lambda t, s: t.scatter(1, kiln.tensor(index), s))(np.zeros((1, 3)), np.array([[1.0, 2.0, 6.0]]))
    np.testing.assert_array_equal(got, [[3.0, 0.0, 0.0]])


@pytest.mark.parametrize("reduce", ["add", "multiply"])
def test_scatter_reduce_add_and_multiply(reduce):
    pair = np.stack([M, M + 0.5])
    fn = _twin(lambda t, i: t[0].scatter(0, i, t[1][:3], reduce=reduce))(SCATTER_INDEX)
    value = _twin(lambda t, i: t.scatter(0, i, 1.5, reduce=reduce))(SCATTER_INDEX)
    _check(fn, _values_only(fn), pair, grad=False)  # PyTorch has no gradient for scatter's reduce
    _check(value, _values_only(value), M, grad=False)


def test_index_add_accumulates_with_alpha():
    fn = _twin(lambda t, i: t[0].index_add(1, i, t[1][:, :4], alpha=-0.5))(np.array([4, 0, 4, 2]))
    _check(fn, fn, np.stack([M, M * 3]))
    fn = _twin(lambda t, i: t.index_add(0, i, t[:2] * t[:2]))(np.array([3, 3]))
    _check(fn, fn, M)


def test_index_fill_and_index_copy():
    fill = _twin(lambda t, i: t.index_fill(-1, i, -2.0))(np.array([1, 3, 1]))
    _check(fill, fill, X)
    copy = _twin(lambda t, i: t[0].index_copy(0, i, t[1][:2] * 2))(np.array([3, 1]))
    _check(copy, copy, np.stack([M, M - 1]))


def test_masked_scatter_takes_the_source_in_order():
    mask = (M > 0.3)
    fn = lambda t: t[0].masked_scatter(kiln.tensor(mask) if isinstance(t, Tensor) else require("torch").tensor(mask), t[1] * 3)
    _check(fn, fn, np.stack([M, M[::-1] + 1]))


def test_masked_scatter_broadcasts_the_mask():
    mask = np.array([True, False, True, False, True])
    fn = lambda t: t[0].masked_scatter(kiln.tensor(mask) if isinstance(t, Tensor) else require("torch").tensor(mask), t[1])
    _check(fn, fn, np.stack([M, M + 2]))


@pytest.mark.parametrize("size", [2, 7, 30])
def test_nonzero_static_pads_with_the_fill_value(size):
    torch = require("torch")
    x = np.where(RNG.random((3, 4)) > 0.5, RNG.standard_normal((3, 4)), 0.0)
    got = _run(lambda t: t.nonzero_static(size=size, fill_value=-7))(x)
    np.testing.assert_array_equal(got, torch.nonzero_static(torch.tensor(x), size=size, fill_value=-7).numpy())


@pytest.mark.parametrize("method", ["scatter_", "scatter_add_", "index_add_", "index_copy_", "index_fill_"])
def test_scatter_in_place_forms(method):
    index = np.array([[2, 0, 1, 3, 0]]) if method.startswith("scatter") else np.array([2, 0])
    extra = {"index_fill_": (1.25,)}.get(method)
    fn = _twin(lambda t, i: getattr(t[0] * 1, method)(0, i, *(extra or (t[1][: i.shape[0]],))))(index)
    _check(fn, fn, np.stack([M, M * 2]))


def test_integer_and_bool_scatters_keep_their_dtype():
    torch = require("torch")
    index = np.array([[1, 0, 1]])
    ints = np.arange(6, dtype=np.int64).reshape(2, 3)
    for name, source in [("scatter", np.array([[5, 6, 7]])), ("scatter_add", np.array([[5, 6, 7]]))]:
        got = _run(lambda t, s: getattr(t, name)(0, kiln.tensor(index), s))(ints, source)
        want = getattr(torch.tensor(ints), name)(0, torch.tensor(index), torch.tensor(source)).numpy()
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    flags = np.zeros((2, 3), bool)
    got = _run(lambda t: t.index_fill(1, kiln.tensor(np.array([2])), True))(flags)
    np.testing.assert_array_equal(got, torch.tensor(flags).index_fill(1, torch.tensor([2]), True).numpy())


def _symbolic(fn, width, *batches, dtype="float64"):
    graph = kiln.trace(fn, kiln.TensorSpec(("N", width), dtype))
    return NumpyBackend().compile(graph)


def test_scatters_over_a_symbolic_batch_match_torch():
    torch = require("torch")
    for batch in (2, 5):
        x = RNG.standard_normal((batch, 4))
        index = RNG.integers(0, 4, (batch, 4))
        fns = {
            "scatter_add": lambda t, i: t.scatter_add(1, i, t * 2),
            "scatter": lambda t, i: t.scatter(1, i, 3.0),
            "index_add": lambda t, i: t.index_add(0, i[:, 0], t),
        }
        for name, fn in fns.items():
            graph = kiln.trace(fn, kiln.TensorSpec(("N", 4), "float64"), kiln.TensorSpec(("N", 4), "int64"))
            got = NumpyBackend().compile(graph)(x, index % batch if name == "index_add" else index)
            want = fn(torch.tensor(x), torch.tensor(index % batch if name == "index_add" else index)).numpy()
            np.testing.assert_allclose(got[0], want, rtol=1e-12, err_msg=name)


def test_scatter_gradient_over_a_symbolic_batch():
    torch = require("torch")
    x = RNG.standard_normal((3, 4))
    index = np.array([[0, 1, 1, 3]] * 3)
    weights = RNG.standard_normal((3, 4))
    got = kiln.grad(lambda t: (t.scatter_add(1, kiln.tensor(index), t * t) * weights).sum())(x)
    t = torch.tensor(x, requires_grad=True)
    (t.scatter_add(1, torch.tensor(index), t * t) * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-12)


# shape -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("dim", "size", "step"), [(0, 2, 1), (-1, 3, 2), (1, 4, 1), (2, 1, 3), (2, 5, 5)])
def test_unfold_windows(dim, size, step):
    _check(_same("unfold", dim, size, step), _same("unfold", dim, size, step), X)


@pytest.mark.parametrize(("k", "dims"), [(1, (0, 1)), (2, (0, 1)), (3, (0, 1)), (-1, (1, 2)), (4, (2, 0)), (5, (-1, -2))])
def test_rot90(k, dims):
    _check(_same("rot90", k, dims), _same("rot90", k, dims), X)


@pytest.mark.parametrize("name", ["fliplr", "flipud", "ravel"])
def test_flips_and_ravel(name):
    _check(_same(name), _same(name), X)


@pytest.mark.parametrize("split", [3, 2, 7, [1, 3], [0, 2, 2, 9], [-2]])
def test_tensor_split(split):
    _check(_same("tensor_split", split, 2), _same("tensor_split", split, 2), X, grad=False)
    _check(lambda t: t.tensor_split(split, 2)[-1] * 2, lambda t: t.tensor_split(split, 2)[-1] * 2, X)


@pytest.mark.parametrize(("name", "sections"), [("hsplit", 2), ("vsplit", 3), ("dsplit", 5), ("hsplit", [1, 3])])
def test_hsplit_vsplit_dsplit(name, sections):
    _check(lambda t: getattr(t, name)(sections)[0] * 3, lambda t: getattr(t, name)(sections)[0] * 3, X[:, :, :5].repeat(2, 0)[:3] if name != "vsplit" else X.repeat(1, 0))


def test_split_with_sizes_select_narrow_copy():
    _check(lambda t: t.split_with_sizes([1, 4], 2)[1], lambda t: t.split_with_sizes([1, 4], 2)[1], X)
    _check(_same("select", 1, -1), _same("select", 1, -1), X)
    _check(_same("narrow_copy", 2, 1, 3), _same("narrow_copy", 2, 1, 3), X)


def _split_by_shapes(lib):
    """Deformable DETR's ``value.split([H_ * W_ for H_, W_ in value_spatial_shapes], dim=1)``: 0-d int64 tensors
    (of a shapes tensor built from constants) as the sizes, and one as the split size."""
    def split(t):
        shapes = lib.as_tensor([(1, 2), (3, 1)], dtype=lib.long)
        pieces = t.split([h * w for h, w in shapes], dim=2)
        return pieces[1] * 2 + t.split(shapes[0, 1], 2)[-1].sum(2, keepdim=True)
    return split


def test_split_sizes_given_as_int_tensors():
    torch = require("torch")
    _check(_split_by_shapes(kiln), _split_by_shapes(torch), X)
    np.testing.assert_allclose(_split_by_shapes(kiln)(kiln.tensor(X)).numpy(),
                               _split_by_shapes(torch)(torch.tensor(X)).numpy(), rtol=1e-12)


@pytest.mark.parametrize(("offset", "dim1", "dim2"), [(0, -2, -1), (1, 0, 2), (-2, 2, 0), (2, 1, 3), (-1, -1, 1)])
def test_diag_embed(offset, dim1, dim2):
    _check(_same("diag_embed", offset, dim1, dim2), _same("diag_embed", offset, dim1, dim2), X)


@pytest.mark.parametrize("offset", [0, 2, -3])
def test_diagflat_and_trace(offset):
    _check(_same("diagflat", offset), _same("diagflat", offset), M)
    _check(_same("trace"), _same("trace"), M)


@pytest.mark.parametrize(("method", "args"), [("transpose_", (0, 2)), ("swapdims_", (1, 2)), ("swapaxes_", (0, 1)),
                                             ("t_", ()), ("squeeze_", (1,)), ("unsqueeze_", (-1,))])
def test_metadata_in_place_ops_change_the_shape(method, args):
    source = M if method == "t_" else X[:, :1] if method == "squeeze_" else X

    def fn(t):
        y = t * 1
        view = y[0]
        getattr(y, method)(*args)
        return y * 2 + view.sum()  # the other views of y stay valid: no element was written

    _check(fn, fn, source)


# special functions ------------------------------------------------------------------------------

ERFINV_POINTS = np.concatenate([np.linspace(-1, 1, 401)[1:-1], 1 - np.logspace(-16, -1, 40), -1 + np.logspace(-15, -1, 30),
                                [0.0, 1e-300, -1e-10, 0.5, -0.5]])
GAMMA_POINTS = np.concatenate([np.linspace(0.01, 30, 301), (np.arange(-12, 0)[:, None] + [0.03, 0.3, 0.5, 0.77, 0.97]).ravel(), [1e-300, 1e-8, 0.5, 1e6, 1e15],
                               -np.array([1e-8, 0.5, 100.5, 1e6 + 0.25])])


def test_erfinv_to_a_few_ulps_including_near_plus_minus_one():
    torch = require("torch")
    got = _run(lambda t: t.erfinv())(ERFINV_POINTS)
    want = torch.tensor(ERFINV_POINTS).erfinv().numpy()
    np.testing.assert_allclose(got, want, rtol=4e-15, atol=1e-300)
    _check(_same("erfinv"), _same("erfinv"), ERFINV_POINTS)


def test_erfinv_edges():
    torch = require("torch")
    edges = np.array([1.0, -1.0, 1.5, -2.0, np.nan, -0.0])
    got = _run(lambda t: t.erfinv())(edges)
    np.testing.assert_array_equal(got, torch.tensor(edges).erfinv().numpy())


def test_erfc_keeps_its_tail():
    torch = require("torch")
    x = np.concatenate([np.linspace(-8, 27, 701), [0.0, 1.999, 2.0, 2.001]])
    _check(_same("erfc"), _same("erfc"), x)
    np.testing.assert_allclose(_run(_same("erfc"))(x), torch.tensor(x).erfc().numpy(), rtol=1e-13, atol=1e-300)
    infinities = np.array([-np.inf, np.inf, np.nan])
    np.testing.assert_array_equal(_run(_same("erfc"))(infinities), torch.tensor(infinities).erfc().numpy())


def test_lgamma_for_positive_and_negative_inputs():
    _check(_same("lgamma"), _same("lgamma"), GAMMA_POINTS)


def test_digamma_and_its_slope_for_positive_and_negative_inputs():
    """PyTorch's trigamma (digamma's slope) is good to about 1e-9 only: mpmath's is the oracle for the slope."""
    mpmath = require("mpmath")
    _check(_same("digamma"), _same("digamma"), GAMMA_POINTS, grad_rtol=1e-8)
    slope = kiln.grad(lambda t: t.digamma().sum())(GAMMA_POINTS)
    np.testing.assert_allclose(slope, [float(mpmath.polygamma(1, x)) for x in GAMMA_POINTS], rtol=1e-13)


@pytest.mark.parametrize("name", ["lgamma", "digamma"])
def test_lgamma_and_digamma_at_poles_and_infinities(name):
    torch = require("torch")
    x = np.array([0.0, -0.0, -1.0, -2.0, -7.0, np.inf, 1.0, 2.0, np.nan])
    got = _run(_same(name))(x)
    np.testing.assert_allclose(got, getattr(torch.tensor(x), name)().numpy(), rtol=0, atol=1e-14)


XY = np.stack([np.abs(M) + 0.1, np.abs(M[::-1]) + 0.2])


@pytest.mark.parametrize(("kiln_fn", "torch_fn", "data"), [
    (lambda t: t[0].xlogy(t[1]), None, XY),
    (lambda t: t[0].xlogy(3.0), None, XY),
    (lambda t: (t * (t > 0.8)).xlogy(t + 0.5), None, XY[0]),
    (lambda t: (t / 4).logit(), None, XY[0]),
    (lambda t: (t / 5).logit(0.05), None, XY[0]),
    (lambda t: t.sinc(), None, np.concatenate([M.ravel(), [0.0, 1.0, -2.0, 1e-3]])),  # near 0: tests/ops/test_extreme_values.py
    (lambda t: t.deg2rad(), None, M),
    (lambda t: t.rad2deg(), None, M),
    (lambda t: t[0].float_power(t[1]), None, XY),
    (lambda t: t.float_power(2.5), None, XY[0]),
    (lambda t: t[0].copysign(t[1] - 0.8), None, XY - 0.7),
    (lambda t: t.copysign(-0.0), None, M),
    (lambda t: t[0].fmax(t[1]), None, XY),
    (lambda t: t[0].fmin(t[1]), None, XY),
    (lambda t: t[0].logaddexp2(t[1]), None, XY),
    (lambda t: t[0].multiply(t[1]), None, XY),
    (lambda t: t[0].subtract(t[1], alpha=2), None, XY),
    (lambda t: t[0].divide(t[1]), None, XY),
    (lambda t: t[0].divide(t[1], rounding_mode="floor"), None, XY * 3),
    (lambda t: t[0].true_divide(t[1]), None, XY),
    (lambda t: t.negative() + t.positive() * 3, None, M),
    (lambda t: t.absolute(), None, M),
])
def test_elementwise_math(kiln_fn, torch_fn, data):
    _check(kiln_fn, torch_fn or kiln_fn, data)


def test_nan_handling_of_xlogy_fmax_signbit_isclose():
    torch = require("torch")
    x = np.array([0.0, 0.0, 1.0, np.nan, -0.0, 2.0, np.inf, -np.inf])
    y = np.array([np.nan, 0.0, np.nan, 1.0, 3.0, 2.0 + 1e-9, np.inf, 1.0])
    for name in ["xlogy", "fmax", "fmin", "copysign", "isclose"]:
        got = _run(lambda a, b: getattr(a, name)(b))(x, y)
        np.testing.assert_array_equal(got, getattr(torch.tensor(x), name)(torch.tensor(y)).numpy(), err_msg=name)
    for name in ["signbit", "isposinf", "isneginf", "isreal"]:
        np.testing.assert_array_equal(_run(_same(name))(x), getattr(torch.tensor(x), name)().numpy(), err_msg=name)
    got = _run(lambda a, b: a.isclose(b, equal_nan=True))(x, y)
    np.testing.assert_array_equal(got, torch.tensor(x).isclose(torch.tensor(y), equal_nan=True).numpy())


# reductions and linear algebra --------------------------------------------------------------------

NANS = X.copy()
NANS[0, 1, 2] = NANS[2, 3, 0] = np.nan


@pytest.mark.parametrize("dim", [None, 0, -1, (1, 2)])
@pytest.mark.parametrize("name", ["nansum", "nanmean"])
def test_nansum_nanmean(name, dim):
    _check(_same(name, dim), _same(name, dim), NANS)
    _check(_same(name, dim, keepdim=True), _same(name, dim, keepdim=True), X)


@pytest.mark.parametrize("dim", [None, 1, (0, 2)])
def test_count_nonzero(dim):
    x = np.where(X > 0.2, X, 0.0)
    _check(_same("count_nonzero", dim), _same("count_nonzero", dim), x, grad=False)


@pytest.mark.parametrize(("dim", "keepdim"), [(None, False), (None, True), (1, False), (-1, True)])
def test_aminmax(dim, keepdim):
    _check(lambda t: t.aminmax(dim=dim, keepdim=keepdim), lambda t: tuple(t.aminmax(dim=dim, keepdim=keepdim)), X)


@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "midpoint", "nearest"])
@pytest.mark.parametrize(("q", "dim", "keepdim"), [(0.3, None, False), (0.5, 1, False), ([0.0, 0.25, 0.9, 1.0], -1, True),
                                                   (0.75, 0, True), ([0.1, 0.5], None, True), (0.625, 2, False)])
def test_quantile(q, dim, keepdim, interpolation):
    torch = require("torch")
    tq = torch.tensor(q, dtype=torch.float64) if isinstance(q, list) else q
    _check(lambda t: t.quantile(q, dim, keepdim, interpolation=interpolation),
           lambda t: t.quantile(tq, dim, keepdim, interpolation=interpolation), X)


def test_quantile_is_nan_where_a_slice_has_a_nan():
    torch = require("torch")
    got = _run(lambda t: t.quantile(0.4, 2))(NANS)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(torch.tensor(NANS).quantile(0.4, 2).numpy()))


MAT_VEC = np.concatenate([M.ravel(), V, V[:4]])


def _parts(t):
    return t[:20].reshape(4, 5), t[20:25], t[25:29]


@pytest.mark.parametrize("fn", [
    lambda t: _parts(t)[0].mv(_parts(t)[1]),
    lambda t: _parts(t)[2].addmv(_parts(t)[0], _parts(t)[1], beta=0.5, alpha=-2),
    lambda t: _parts(t)[0].addr(_parts(t)[2], _parts(t)[1], alpha=3),
    lambda t: _parts(t)[2].ger(_parts(t)[1]),
    lambda t: _parts(t)[1].inner(_parts(t)[1]),
    lambda t: _parts(t)[0].inner(_parts(t)[0][:3]),
    lambda t: _parts(t)[1].vdot(_parts(t)[1] * 2),
    lambda t: _parts(t)[0].dist(_parts(t)[0] * 0.5, 3),
])
def test_matrix_vector_products(fn):
    _check(fn, fn, MAT_VEC)


def test_inner_of_higher_rank_tensors():
    _check(lambda t: t.inner(t[0, :2] * 2), lambda t: t.inner(t[0, :2] * 2), X)


@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_cross(dim):
    a = RNG.standard_normal((2, 3, 3, 4)) if dim != -1 else RNG.standard_normal((2, 4, 3))
    fn = lambda t: t[0].cross(t[1] + t[0] * t[0], dim=dim)
    _check(fn, fn, a)


@pytest.mark.parametrize("correction", [1, 0, 2])
def test_cov(correction):
    _check(_same("cov", correction=correction), _same("cov", correction=correction), M)
    _check(_same("cov", correction=correction), _same("cov", correction=correction), V)


def test_corrcoef():
    _check(_same("corrcoef"), _same("corrcoef"), M, grad_rtol=1e-8)
    _check(_same("corrcoef"), _same("corrcoef"), V, grad=False)


# in-place forms ------------------------------------------------------------------------------

UNARY_IN_PLACE = ["sin", "cos", "tan", "floor", "ceil", "round", "trunc", "frac", "expm1", "log1p", "log2", "log10",
                  "exp2", "reciprocal", "rsqrt", "erf", "erfc", "erfinv", "lgamma", "digamma", "sinc", "deg2rad", "square",
                  "negative", "sign", "sgn", "atan", "arctan", "logit", "sinh", "cosh"]


@pytest.mark.parametrize("name", UNARY_IN_PLACE)
def test_unary_in_place_forms(name):
    data = (np.abs(M) % 0.9) + 0.05  # inside (0, 1): every one of them is finite

    def fn(t):
        y = t * 1
        returned = getattr(y, f"{name}_")()
        assert returned is y
        return y

    differentiable = name not in ("sgn", "sign")  # torch's sgn slope is a ZeroTensor
    _check(fn, fn if differentiable else _values_only(fn), data, grad=differentiable, grad_rtol=1e-8)


@pytest.mark.parametrize(("name", "args"), [("atan2", ()), ("hypot", ()), ("copysign", ()), ("xlogy", ()), ("fmod", ()),
                                            ("remainder", ()), ("multiply", ()), ("subtract", ()), ("true_divide", ()),
                                            ("gt", ()), ("not_equal", ()), ("logical_and", ()), ("cumsum", (1,))])
def test_binary_in_place_forms(name, args):
    def fn(t):
        y = t[0] * 1
        getattr(y, f"{name}_")(*(args or (t[1] - 0.7,)))
        return y

    differentiable = name not in ("fmod", "remainder", "gt", "not_equal", "logical_and")
    _check(fn, fn if differentiable else _values_only(fn), XY, grad=differentiable)


def test_in_place_math_refuses_to_write_floats_into_ints():
    with pytest.raises(KilnError, match="cannot be written"):
        kiln.trace(lambda t: t.sin_(), kiln.TensorSpec((3,), "int64"))


# dtypes of int and bool inputs ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["erfc", "erfinv", "lgamma", "digamma", "sinc", "deg2rad", "rad2deg", "logit", "signbit",
                                  "sgn", "ravel", "fliplr", "nansum", "count_nonzero", "trace", "cov", "corrcoef"])
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_result_dtypes_of_int_and_bool_inputs(name, dtype):
    torch = require("torch")
    x = (np.arange(6).reshape(2, 3) % 3 - (dtype != "bool")).astype(dtype)
    try:
        want = getattr(torch.tensor(x), name)()
    except RuntimeError:
        pytest.skip(f"torch has no {name} for {dtype}")
    got = _run(_same(name))(x)
    assert got.dtype == want.numpy().dtype
    np.testing.assert_allclose(got.astype(np.float64), want.double().numpy(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["xlogy", "copysign", "float_power", "multiply", "true_divide", "fmax"])
def test_binary_result_dtypes_of_int_inputs(name):
    torch = require("torch")
    a, b = np.array([1, 2, 0]), np.array([3, 1, 2])
    want = getattr(torch.tensor(a), name)(torch.tensor(b)).numpy()
    got = _run(lambda x, y: getattr(x, name)(y))(a, b)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6)


# symbolic batch dims -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["erfinv", "lgamma", "digamma", "erfc", "xlogy", "unfold", "nansum", "rot90", "diag_embed",
                                  "quantile", "cross"])
def test_a_symbolic_batch_runs_at_two_sizes(name):
    torch = require("torch")
    calls = {"xlogy": _same("xlogy", 2.0), "unfold": _same("unfold", 1, 2, 1), "nansum": _same("nansum", 1),
             "rot90": _same("rot90", 1, (1, 2)), "diag_embed": _same("diag_embed", 1), "quantile": _same("quantile", 0.3, 1),
             "cross": lambda t: t[:, :3].cross(t[:, 1:], dim=1)}
    fn = calls.get(name, _same(name))
    spec = ("N", 4, 4) if name == "rot90" else ("N", 4)
    run = NumpyBackend().compile(kiln.trace(fn, kiln.TensorSpec(spec, "float64")))
    for batch in (1, 3):
        x = np.random.default_rng(batch).uniform(-0.9, 0.9, (batch,) + spec[1:])
        np.testing.assert_allclose(run(x)[0], fn(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-14)


# errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("call", "message"), [
    (lambda t: t.unique(), "data-dependent shape"),
    (lambda t: t.bincount(), "largest value"),
    (lambda t: t.allclose(t), "Python bool"),
    (lambda t: t.equal(t), "Python bool"),
    (lambda t: t.quantile(1.5), "q must be"),
    (lambda t: t.quantile(0.5, interpolation="cubic"), "interpolation"),
    (lambda t: t.unfold(1, 9, 1), "unfold"),
    (lambda t: t.scatter(1, kiln.tensor(np.zeros((2, 2), np.int64)), 1.0, reduce="max"), "reduce"),
    (lambda t: t.index_add(0, kiln.tensor(np.zeros((2, 2), np.int64)), t), "1-D"),
    (lambda t: t.fliplr().trace().reshape(1).trace(), "2-D"),
    (lambda t: t.cross(t), "size 3"),
    (lambda t: t.cov(fweights=t), "fweights"),
    (lambda t: t.tensor_split(t), "a traced tensor"),
])
def test_clear_errors(call, message):
    with pytest.raises(KilnError, match=message):
        kiln.trace(call, kiln.TensorSpec((4, 5), "float64"))


def test_a_scatter_into_a_symbolic_scattered_dim_names_index_add():
    spec = kiln.TensorSpec(("N", 4), "float64")
    with pytest.raises(KilnError, match="index_add"):
        kiln.trace(lambda t, i: t.scatter_add(0, i, t), spec, kiln.TensorSpec(("N", 4), "int64"))


def test_swapdims_in_place_on_a_parameter_is_refused():
    layer = kiln.nn.Linear(3, 2)
    with pytest.raises(KilnError, match="parameter"):
        kiln.trace(lambda t: (layer.weight.t_(), t)[1], kiln.TensorSpec((2, 3)))


def test_extra_forwarded_names_torch_functions():
    torch = require("torch")
    assert [name for name in EXTRA_FORWARDED if not callable(getattr(torch, name, None))] == []
    assert [name for name in EXTRA_FORWARDED if not hasattr(Tensor, name)] == []


def test_the_extra_functions_are_kiln_functions_and_kiln_trace_stays_the_tracer():
    x = np.array([[0.25, -0.5], [0.75, 0.1]])
    got = kiln.compile(lambda t: kiln.erfinv(t) + kiln.fliplr(t) + kiln.nansum(t))(x)
    torch = require("torch")
    t = torch.tensor(x)
    np.testing.assert_allclose(got, (torch.erfinv(t) + torch.fliplr(t) + torch.nansum(t)).numpy(), rtol=1e-12)
    assert all(callable(getattr(kiln, name)) for name in EXTRA_FORWARDED)
    assert kiln.trace.__module__ == "kiln.frontend.trace"
