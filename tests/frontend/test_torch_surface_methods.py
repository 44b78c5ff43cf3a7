"""``frontend/tensor_more.py`` against PyTorch in float64: the scatter writes (``scatter_reduce``/``index_reduce`` with
every reduce and ``include_self``, ``index_put`` with duplicates and ``accumulate``, the ``*_scatter`` family,
``fill_diagonal_``), NaN statistics and ``mode`` (their tie rules), the special functions (``i0`` across its series
switch, ``polygamma``, ``mvlgamma``, ``igamma``/``igammac`` on both sides of ``a + 1``, ``frexp``/``ldexp``/``nextafter``
at zeros, subnormals and powers of two), integer ``gcd``/``lcm``/shifts, the in-place forms, and the dtype errors.
Values and gradients through kiln's autodiff to rtol 1e-10 (``tensor_parity._check``)."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import KilnError
from kiln.frontend import tensor_more
from kiln.frontend.tensor import Tensor
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(31)
X = RNG.standard_normal((3, 4, 5))
M = RNG.standard_normal((4, 5))
NANS = np.where(RNG.random((4, 6)) < 0.3, np.nan, RNG.standard_normal((4, 6)))
NANS[2] = np.nan
NANS[3, :5] = np.nan
SCATTER_INDEX = np.array([[0, 1, 2, 3, 1], [2, 0, 3, 1, 0], [3, 3, 0, 2, 2]])


def _index(values):
    """An int64 index made by the library of the tensor it is used with (kiln.tensor in a trace, torch.tensor)."""
    return lambda t: kiln.tensor(np.asarray(values)) if isinstance(t, Tensor) else require("torch").tensor(np.asarray(values))


def _values_only(fn):
    return lambda *ts: fn(*[t.detach() for t in ts])


def _run(fn, *arrays):
    graph = kiln.trace(fn, *[kiln.TensorSpec(a.shape, str(a.dtype)) for a in arrays])
    return NumpyBackend().compile(graph)(*arrays)


I = _index(SCATTER_INDEX)
V = _index([3, 0, 3, 1])

DIFFERENTIABLE = {  # name: (function of a tensor of either library, input)
    "scatter_reduce_sum": (lambda t: t[0].scatter_reduce(0, I(t), t[1][:3] * 2, "sum"), np.stack([M, M + 1])),
    "scatter_reduce_sum_exclusive": (lambda t: t[0].scatter_reduce(0, I(t), t[1][:3], "sum", include_self=False), np.stack([M, -M])),
    "scatter_reduce_prod": (lambda t: t[0].scatter_reduce(0, I(t), t[1][:3], "prod"), np.stack([M, M * 0.5 + 1])),
    "scatter_reduce_mean": (lambda t: (t[0].scatter_reduce(0, I(t), t[1][:3], "mean"),
                                       t[0].scatter_reduce(0, I(t), t[1][:3], "mean", include_self=False)), np.stack([M, M * 3])),
    "scatter_reduce_amax": (lambda t: t[0].scatter_reduce(0, I(t), t[1][:3], "amax", include_self=False), np.stack([M, M * 2 + 0.1])),
    "scatter_reduce_amin": (lambda t: t[0].scatter_reduce(-2, I(t), t[1][:3], "amin"), np.stack([M, M * 2 + 0.1])),
    "index_reduce_prod": (lambda t: t[0].index_reduce(0, V(t), t[1], "prod"), np.stack([M, M + 2])),
    "index_reduce_mean": (lambda t: (t[0].index_reduce(1, _index([4, 0, 4, 2, 2])(t), t[1], "mean", include_self=False),
                                     t[0].index_reduce(1, _index([4, 0, 4, 2, 2])(t), t[1], "mean")), np.stack([M, M * 2])),
    "index_reduce_amax": (lambda t: t[0].index_reduce(0, V(t), t[1] * 3, "amax"), np.stack([M, M + 0.1])),
    "index_reduce_amin": (lambda t: t[0].index_reduce(1, _index([1, 1, 3, 0, 3])(t), t[1], "amin", include_self=False), np.stack([M, -M])),
    "index_put": (lambda t: t[0].index_put((_index([0, 2, 3])(t), _index([1, 4, -1])(t)), t[1][0, :3]), np.stack([M, M * 2])),
    "index_put_accumulate": (lambda t: t[0].index_put((_index([0, 2, 0])(t), _index([1, 4, 1])(t)), t[1][1, :3], accumulate=True),
                             np.stack([M, M * 2])),
    "index_put_rows": (lambda t: t[0].index_put((_index([3, 1])(t),), t[1][:2], accumulate=True), np.stack([M, M * 2])),
    "index_put_mask": (lambda t: t.index_put((t > 0.5,), t[0, 0] * 10), M),
    "index_put_in_place": (lambda t: t[0].clone().index_put_((_index([2, 0])(t),), t[1][0]), np.stack([M, M * 2])),
    "select_scatter": (lambda t: (t[0].select_scatter(t[1][1], 0, 2), t[0].select_scatter(t[1][:, 3], -1, -2)), np.stack([M, M - 1])),
    "slice_scatter": (lambda t: (t[0].slice_scatter(t[1][:2], 0, 1, 3), t[0].slice_scatter(t[1][:, :2], 1, 0, 4, 2),
                                 t[0].slice_scatter(t[1][:, :2], dim=1, start=-2)), np.stack([M, M - 1])),
    "diagonal_scatter": (lambda t: (t[0].diagonal_scatter(t[1].diagonal(), 0), t[0].diagonal_scatter(t[1].diagonal(1), 1),
                                    t[0].diagonal_scatter(t[1].diagonal(-2), -2)), np.stack([M, M * 3])),
    "diagonal_scatter_batched": (lambda t: t.diagonal_scatter(t.diagonal(0, 1, 2) * 2, 0, 1, 2), X),
    "fill_diagonal_": (lambda t: (t.clone().fill_diagonal_(2.5), t.repeat(3, 1).clone().fill_diagonal_(-1.0, wrap=True),
                                  t.repeat(3, 1).clone().fill_diagonal_(-1.0)), M),
    "nanmedian": (lambda t: (t.nanmedian(), t.nanmedian(1).values, t.nanmedian(0, keepdim=True).values), NANS),
    "nanquantile": (lambda t: (t.nanquantile(0.3), t.nanquantile(0.6, dim=1), t.nanquantile(0.25, 0, True),
                               t.nanquantile(0.5, 1, interpolation="midpoint"), t.nanquantile(0.7, 1, interpolation="lower"),
                               t.nanquantile(0.7, 1, interpolation="higher"), t.nanquantile(0.4, 1, interpolation="nearest")), NANS),
    "nanquantile_levels": (lambda t: (t.nanquantile(require_levels(t), 1), t.nanquantile(require_levels(t), None, keepdim=True)), NANS),
    "mode": (lambda t: tuple(t.round().mode(1)) + tuple(t.round().mode(0, keepdim=True)), np.round(X[0] * 1.5)),
    "renorm": (lambda t: (t.renorm(2, 0, 1.5), t.renorm(1, 1, 2.0), t.renorm(3, -1, 100.0)), X),
    "sum_to_size": (lambda t: (t.sum_to_size(4, 1), t.sum_to_size((1, 5)), t.sum_to_size(5), t.sum_to_size(3, 4, 5)), X),
    "addbmm": (lambda t: (t[0, :, :3].addbmm(t[1:, :, :4], t[1:, :, 1:4], beta=0.5, alpha=2),
                          t[0, 0, :3].addbmm(t[1:, :, :4], t[1:, :, 1:4]), t[0, :, :3].addbmm(t[1:, :, :4], t[1:, :, 1:4], beta=0),
                          t[0, 0, :3].addbmm(t[1:, :, :4], t[1:, :, 1:4], beta=0, alpha=-1)), X),
    "i0": (lambda t: (t.i0(), (t * 12).i0(), (t * 40).i0() * 1e-20), X[0]),
    "i0_switch": (lambda t: t.i0(), np.array([19.999, 20.0, 20.001, -20.5, 0.0, 1e-8])),
    "mvlgamma": (lambda t: (t.mvlgamma(1), t.mvlgamma(3), t.mvlgamma(5)), np.abs(M) * 4 + 2.01),
    "igamma": (lambda t: (t[0].detach().igamma(t[1]), t[0].detach().igammac(t[1]), t[0].igamma(t[1] * 0.2), t[0].igammac(t[1] * 5)), np.stack([np.abs(M) * 4 + 0.1, np.abs(M[::-1]) * 6 + 1e-3])),
    # float exponents: torch's ldexp by a negative int64 exponent gives 0 (an integer power of 2); kiln's 2^-k
    "ldexp": (lambda t: (t.ldexp(EXPONENTS(t)), t.ldexp(_index(2)(t)), t.ldexp(_index([3, 0, 40, 1, 2])(t))), M),
    "frexp": (lambda t: tuple(t.frexp()) + tuple((t * 1e-310).frexp()) + tuple(SPECIALS(t).frexp()), M),
    "hardshrink_prelu": (lambda t: (t.hardshrink(), t.hardshrink(0.9), t[None].prelu(t[0, :4] * 0 + 0.25)), M),
    "in_place": (lambda t: (t[0].clone().scatter_reduce_(0, I(t), t[1][:3], "amax"), t.abs().i0_(), (t.abs() + 1).polygamma_(2),
                            (t.abs() + 2).mvlgamma_(2), t.clone().renorm_(2, 0, 1.0), t.clone().ldexp_(_index(2)(t)),
                            t[0].clone().index_reduce_(0, V(t), t[1], "mean"), t[0, :, :3].clone().addbmm_(t, t.transpose(1, 2)[:, :, :3])),
                 np.stack([M, M + 1])),
}


def SPECIALS(lib_tensor):  # noqa: N802  (a constant made by the library of the tensor given)
    values = np.array([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -8.0])
    return kiln.tensor(values) if isinstance(lib_tensor, Tensor) else require("torch").tensor(values)


def EXPONENTS(lib_tensor):  # noqa: N802
    values = np.array([3.0, -2.0, 0.0, 40.0, -1070.0])
    return kiln.tensor(values) if isinstance(lib_tensor, Tensor) else require("torch").tensor(values)


def require_levels(t):
    levels = np.array([0.0, 0.5, 0.9])
    return levels if isinstance(t, Tensor) else require("torch").tensor(levels)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_method_matches_torch(name):
    fn, array = DIFFERENTIABLE[name]
    _check(fn, fn, array)


def _values_with_nans_equal(got, want):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=1e-12)


def test_polygamma_against_scipy():
    """torch's trigamma is off by 5e-10 here, so SciPy's ``polygamma`` is the oracle (values, and the slope psi^(n+1)),
    and mpmath's for negative arguments (between the poles, down to -10)."""
    special = require("scipy.special")
    x = np.abs(M) * 3 + 0.05
    for n in (0, 1, 2, 3):
        (values,) = _run(lambda t: t.polygamma(n), x)
        np.testing.assert_allclose(values, special.polygamma(n, x), rtol=1e-14)
        np.testing.assert_allclose(kiln.grad(lambda t: t.polygamma(n).sum())(x), special.polygamma(n + 1, x), rtol=1e-13)
    mpmath = require("mpmath")
    negative = np.array([-9.7, -5.5, -2.25, -0.3, 1e-3, 45.0])
    for n in (1, 2, 3):
        (values,) = _run(lambda t: t.polygamma(n), negative)
        np.testing.assert_allclose(values, [float(mpmath.polygamma(n, v)) for v in negative], rtol=1e-13)


def test_nanmedian_indices_and_all_nan_rows():
    torch = require("torch")
    values, indices = _run(lambda t: tuple(t.nanmedian(1)), NANS)
    want = torch.tensor(NANS).nanmedian(1)
    _values_with_nans_equal(values, want.values.numpy())
    numbers = ~np.isnan(NANS).all(1)  # an all-NaN row's index is unspecified
    np.testing.assert_array_equal(indices[numbers], want.indices.numpy()[numbers])
    assert np.isnan(values[2]) and numbers.sum() >= 2


def test_nextafter_steps_one_ulp_both_ways_in_float64_and_float32():
    torch = require("torch")
    x = np.array([0.0, 1.0, 1.0, -2.0, 2.0, 1e-310, 5e-324, -5e-324, 3.0, math.nan, 1.7976931348623157e308, 0.5])
    y = np.array([1.0, 2.0, 0.0, 0.0, 2.0, 0.0, 0.0, 1.0, -math.inf, 1.0, math.inf, -1.0])
    for dtype in ("float64", "float32"):
        a, b = x.astype(dtype), y.astype(dtype)
        (got,) = _run(lambda s, t: s.nextafter(t), a, b)
        want = torch.nextafter(torch.tensor(a), torch.tensor(b)).numpy()
        np.testing.assert_array_equal(got, want)
    (scalar,) = _run(lambda s: kiln.nextafter(s, 3.0), x[:3])
    np.testing.assert_array_equal(scalar, np.nextafter(x[:3], 3.0))


INTEGERS = (np.array([[12, -18, 0, 7, 2**40 * 3, 1071], [0, 5, -9, 13, 2**35, 462]]))


def test_gcd_lcm_and_shifts_of_integers():
    torch = require("torch")
    a, b = INTEGERS
    t, u = torch.tensor(a), torch.tensor(b)
    got = _run(lambda x, y: (x.gcd(y), x.lcm(y), kiln.gcd(x, y), x.bitwise_left_shift(_shift(x)), x.bitwise_right_shift(_shift(x)),
                             kiln.bitwise_left_shift(x, 3), x.clone().gcd_(y)), a, b)
    shift = torch.tensor(SHIFTS)
    want = (t.gcd(u), t.lcm(u), torch.gcd(t, u), t.bitwise_left_shift(shift), t.bitwise_right_shift(shift),
            torch.bitwise_left_shift(t, 3), t.gcd(u))
    for g, w in zip(got, want):
        assert g.dtype == w.numpy().dtype
        np.testing.assert_array_equal(g, w.numpy())
    fibonacci = np.array([2**62 + 1, 7540113804746346429])  # consecutive Fibonacci numbers need Euclid's longest run
    (steps,) = _run(lambda x, y: x.gcd(y), fibonacci, np.array([4660046610375530309, 4660046610375530309]))
    np.testing.assert_array_equal(steps, np.gcd(fibonacci, 4660046610375530309))
    (small,) = _run(lambda x, y: x.gcd(y), a.astype(np.int32) % 1000, b.astype(np.int32) % 1000)
    np.testing.assert_array_equal(small, np.gcd(a.astype(np.int32) % 1000, b.astype(np.int32) % 1000))


SHIFTS = np.array([1, 2, 0, 5, 3, 4])


def _shift(x):
    return kiln.tensor(SHIFTS)


def test_igamma_edges_are_torchs():
    torch = require("torch")
    a = np.array([1.0, 0.0, -1.0, 2.0, 0.0, np.inf, 2.0, 2.0, np.nan, np.inf, 3.0])
    x = np.array([-1.0, 2.0, 2.0, 0.0, 0.0, 3.0, np.inf, np.nan, 1.0, np.inf, 1e-300])
    got = _run(lambda s, t: (s.igamma(t), s.igammac(t)), a, x)
    want = (torch.igamma(torch.tensor(a), torch.tensor(x)), torch.igammac(torch.tensor(a), torch.tensor(x)))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w.numpy())


def test_integer_means_floor_as_torchs():
    torch = require("torch")
    base, source = np.array([[4, 0, 1]]), np.array([[-3, 0, -7]])
    for include_self in (False, True):
        got = _run(lambda z, s: (z.scatter_reduce(1, kiln.tensor(np.array([[0, 0, 1]])), s, "mean", include_self=include_self),
                                 z.index_reduce(1, kiln.tensor(np.array([0, 0, 1])), s, "mean", include_self=include_self)), base, source)
        z, s = torch.tensor(base), torch.tensor(source)
        want = (z.scatter_reduce(1, torch.tensor([[0, 0, 1]]), s, "mean", include_self=include_self),
                z.index_reduce(1, torch.tensor([0, 0, 1]), s, "mean", include_self=include_self))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w.numpy())


def test_metadata_and_construction():
    torch = require("torch")
    seen = {}

    def body(x):
        seen.update(itemsize=x.itemsize, nbytes=x.nbytes, signed=(x.is_signed(), (x > 0).is_signed(), x.long().is_signed()),
                    same=(x.is_same_size(x * 2), x.is_same_size(x[0])), float_bytes=x.float().nbytes)
        return x.new_empty(2, 3) + x.new_empty((2, 3), dtype=kiln.float64)

    (empty,) = _run(body, M)
    t = torch.tensor(M)
    assert seen == dict(itemsize=t.itemsize, nbytes=t.nbytes, signed=(t.is_signed(), (t > 0).is_signed(), t.long().is_signed()),
                        same=(t.is_same_size(t * 2), t.is_same_size(t[0])), float_bytes=t.float().nbytes)
    assert empty.shape == (2, 3) and empty.dtype == np.float64


def test_byte_char_and_short_cast_as_torch():
    torch = require("torch")
    x = np.array([[0.5, 1.9, 100.2], [127.7, 3.0, 0.0]])
    theirs = [t.numpy() for t in (lambda t: (t.byte(), t.char(), t.short()))(torch.from_numpy(x))]
    for got, expected in zip(_run(lambda s: (s.byte(), s.char(), s.short()), x), theirs):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("call, message", [
    (lambda x: x.scatter_reduce(0, x.long(), x, "add"), "reduce argument must be either sum, prod, mean, amax or amin, got add"),
    (lambda x: x.index_reduce(0, x[0].long(), x, "sum"), "Expected reduce to be one of prod, mean, amax or amin but got sum"),
    (lambda x: x.gcd(x), "gcd takes integer tensors"),
    (lambda x: x.long().frexp(), "frexp takes a floating tensor"),
    (lambda x: x.sum_to_size(3), r"does not broadcast from the size \(3,\)"),
    (lambda x: x.fill_diagonal_(1.0) if x.ndim == 3 else x[None].fill_diagonal_(1.0), "all dims equal"),
    (lambda x: x.polygamma(-1), "n must be a non-negative int"),
    (lambda x: x.nanquantile(1.5), r"q must be in \[0, 1\], got 1.5"),
    (lambda x: x[0].H, r"Tensor.H is for matrices, got tensor<5xf64>"),
    (lambda x: x.index_put((x > 0, x[0] > 0), x[0], accumulate=True), "takes integer index tensors"),
])
def test_bad_calls_say_what_and_where(call, message):
    with pytest.raises(KilnError, match=message) as error:
        kiln.trace(call, kiln.TensorSpec((4, 5), "float64"))
    assert "test_torch_surface_methods.py" in str(error.value)


def test_every_new_method_is_torchs_and_compared_here():
    torch = require("torch")
    added = [name for name in vars(tensor_more.MoreMethods) if not name.startswith("_")]
    assert all(hasattr(torch.Tensor, name) for name in added), [n for n in added if not hasattr(torch.Tensor, n)]
    folder = pathlib.Path(__file__).parent
    source = "".join(path.read_text() for path in folder.glob("test_torch_surface*.py"))
    generated = {f"{name}_" for name in tensor_more._IN_PLACE}
    assert not [name for name in added if f".{name}" not in source and name not in generated]


@pytest.mark.parametrize("name", tensor_more._IN_PLACE)
def test_generated_in_place_form_writes_the_method_into_the_tensor(name):
    """Each ``name_`` traced on a copy equals ``name`` (an input and the arguments of each method from one table)."""
    array, args = IN_PLACE_ARGUMENTS[name]
    out_of_place, in_place = _run(lambda t: (getattr(t, name)(*args(t)), getattr(t.clone(), f"{name}_")(*args(t))), array)
    np.testing.assert_array_equal(in_place, out_of_place)
    assert in_place.dtype == array.dtype


POSITIVE, COUNTS, FLAGS = np.abs(M) + 1.0, INTEGERS[0, :5].reshape(1, 5), M > 0
IN_PLACE_ARGUMENTS = {
    "scatter_reduce": (POSITIVE, lambda t: (0, _index(SCATTER_INDEX[:1, :5])(t), t * 2, "amin")),
    "index_reduce": (POSITIVE, lambda t: (0, _index([0])(t), t[:1] * 2, "prod")),
    "renorm": (POSITIVE, lambda t: (2, 0, 1.0)), "addbmm": (POSITIVE, lambda t: (t.unsqueeze(0), (t.t() @ t).unsqueeze(0))),
    "i0": (POSITIVE, lambda t: ()), "polygamma": (POSITIVE, lambda t: (2,)), "mvlgamma": (POSITIVE, lambda t: (1,)),
    "igamma": (POSITIVE, lambda t: (t * 0.5,)), "igammac": (POSITIVE, lambda t: (t * 2,)), "ldexp": (POSITIVE, lambda t: (_index(3)(t),)),
    "nextafter": (POSITIVE, lambda t: (t * 0,)), "gcd": (COUNTS, lambda t: (t + 6,)), "lcm": (COUNTS, lambda t: (t + 6,)),
    "bitwise_left_shift": (COUNTS, lambda t: (2,)), "bitwise_right_shift": (COUNTS, lambda t: (2,)),
    "bitwise_and": (FLAGS, lambda t: (t.flip(0),)), "bitwise_or": (FLAGS, lambda t: (t.flip(0),)),
    "bitwise_xor": (FLAGS, lambda t: (t.flip(0),)), "bitwise_not": (FLAGS, lambda t: ()),
}


def test_special_functions_in_float32_stay_float32_and_close_to_torch():
    torch = require("torch")
    x = (np.abs(M) * 3 + 0.2).astype(np.float32)
    fn = lambda t: (t.i0(), (t * 9).i0(), t.polygamma(1), t.mvlgamma(2), t.igamma(t * 1.5), t.igammac(t * 0.5), t.frexp()[0],  # noqa: E731
                    t.ldexp(t.round()), t.renorm(2, 0, 1.0), t.nanquantile(0.3, 1))
    got = _run(fn, x)
    for ours, theirs in zip(got, fn(torch.tensor(x)), strict=True):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=2e-6, atol=1e-6)
