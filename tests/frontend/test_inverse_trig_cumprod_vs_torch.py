"""``atan``/``asin``/``acos`` and their ``arc*`` aliases, ``atan2``, ``asinh``/``acosh``/``atanh`` and ``cumprod`` as
Tensor methods and ``kiln.*`` functions, against PyTorch in float64.

Values and gradients to rtol 1e-10 (``tensor_parity._check``); ``atan2`` over every pair of zeros (both signs),
infinities, NaN and finite values, its quadrant, signed zeros and corners exactly; the inverse hyperbolic functions
from 1e-300 to 1e300 within a few ulps of libm, with their slopes, and near +-1 (where PyTorch's own slope formulas
``1 / (1 - x^2)`` and ``rsqrt(x^2 - 1)`` cancel) against the exact slope; ``cumprod`` with zeros, dtypes and ``dim``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(17)
X = RNG.standard_normal((3, 4))
Y = RNG.standard_normal((3, 4))
UNIT = RNG.uniform(-0.98, 0.98, (3, 4))


def _lib(name):
    return kiln if name == "kiln" else require("torch")


METHODS = {  # (function of (library, x, y), inputs)
    "atan_asin_acos": (lambda lib, x, y: (x.atan() * y.asin() + y.acos() + x.arctan() - y.arcsin() * y.arccos(),
                                          lib.atan(x), lib.asin(y), lib.acos(y), lib.arctan(x)), (X, UNIT)),
    "atan2": (lambda lib, x, y: (x.atan2(y) * 2, lib.atan2(y, x), x.arctan2(y * 1e-3), lib.arctan2(x * 1e5, y)), (X, Y)),
    "inverse_hyperbolic": (lambda lib, x, y: (x.asinh() * y + (x.abs() + 1.0).acosh() + (y * 0.5).tanh().atanh(),
                                              lib.asinh(x), lib.arcsinh(y), lib.acosh(x.abs() + 1), lib.arccosh(y.abs() + 2),
                                              lib.atanh(y.tanh() * 0.9), lib.arctanh(x.tanh())), (X, Y)),
    "cumprod": (lambda lib, x, y: (x.cumprod(1) * y, lib.cumprod(x, 0), x.cumprod(-1), (x * ZEROS_T(lib)).cumprod(1),
                                   (x * ZEROS_T(lib)).cumprod(0)), (X, Y)),
}


def ZEROS_T(lib):  # noqa: N802  (a constant made by either library)
    """Lanes with no zero, one, two and a zero first or last, along both dims."""
    return lib.tensor(np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]]))


@pytest.mark.parametrize("name", METHODS)
def test_methods_and_functions_match_torch(name):
    fn, arrays = METHODS[name]
    _check(lambda *xs: fn(kiln, *xs), lambda *xs: fn(_lib("torch"), *xs), *arrays)


def _run(fn, *arrays):
    graph = kiln.trace(fn, *[kiln.TensorSpec(a.shape, str(a.dtype)) for a in arrays])
    with np.errstate(divide="ignore", invalid="ignore"):  # 1 / -0.0 tells -0.0 from 0.0; branches not taken overflow
        return NumpyBackend().compile(graph)(*arrays)


def _assert_same(got, want, maxulp=2):
    """Equal NaN positions, numbers within ``maxulp`` ulps, equal signs (of zeros too)."""
    numbers = ~np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), ~numbers)
    np.testing.assert_array_max_ulp(got[numbers], want[numbers], maxulp=maxulp)
    np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))


SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, 2.5, -3.0, 1e-300, -1e300, np.inf, -np.inf, np.nan])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_atan2_quadrants_zeros_and_infinities_match_torch(dtype):
    torch = require("torch")
    y, x = (grid.astype(dtype) for grid in np.meshgrid(SPECIAL, SPECIAL, indexing="ij"))
    (got,) = _run(lambda a, b: a.atan2(b), y, x)
    assert got.dtype == y.dtype
    _assert_same(got, torch.atan2(torch.tensor(y), torch.tensor(x)).numpy())


def test_atan2_gradients_match_torch_off_the_origin():
    """``x / (x^2 + y^2)`` and ``-y / (x^2 + y^2)``, on the axes (zeros of either sign) and in every quadrant."""
    values = np.array([0.0, -0.0, 0.5, -2.0, 3.0, -1e-3])
    y, x = np.meshgrid(values, values, indexing="ij")
    away = (y != 0) | (x != 0)
    y, x = y[away], x[away]
    _check(lambda a, b: a.atan2(b), lambda a, b: a.atan2(b), y, x)


def test_atan2_promotes_like_torch():
    graph = kiln.trace(lambda a, b, i: (a.atan2(b), b.atan2(b), i.atan2(i), a.atan2(2.0)),
                       kiln.TensorSpec((2,), "float32"), kiln.TensorSpec((2,), "float64"), kiln.TensorSpec((2,), "int64"))
    assert [v.type.dtype.value for v in graph.outputs] == ["f64", "f64", "f32", "f32"]


MAGNITUDES = np.concatenate([[0.0, -0.0, 1e-300, 1e-10, -1e-10, 1e-12, 0.3, -2.5, 2.0**28, 2.0**28 * 0.999, 1e10, -1e10, 1e300,
                              np.inf, -np.inf, np.nan], RNG.standard_normal(200) * 10.0 ** RNG.integers(-15, 15, 200)])
NEAR_ONE = np.concatenate([[1.0, 1 + 2.0**-52, 1 + 1e-12, 1 + 1e-6, 1.5, 2.0, 0.5, -1.0, -3.0],
                           1 + 10.0 ** -RNG.uniform(1, 15, 100), 1 + 10.0 ** RNG.uniform(-1, 300, 100)])
INSIDE_ONE = np.concatenate([[0.0, -0.0, 1e-300, 1e-12, -1e-12, 0.3, -0.49, 0.5, 0.7, 1.0, -1.0, 1.5, np.nan],
                             1 - 10.0 ** -RNG.uniform(0, 15, 100), -(1 - 10.0 ** -RNG.uniform(0, 15, 100)), RNG.uniform(-1, 1, 100)])


@pytest.mark.parametrize(("name", "x"), [("asinh", MAGNITUDES), ("acosh", NEAR_ONE), ("atanh", INSIDE_ONE)])
def test_inverse_hyperbolic_values_match_torch_from_tiny_to_huge(name, x):
    torch = require("torch")
    (got,) = _run(lambda t: getattr(t, name)(), x)
    _assert_same(got, getattr(torch, name)(torch.tensor(x)).numpy(), maxulp=3)


def _slope(name: str, x: np.ndarray) -> np.ndarray:
    """The exact slope, written so nothing cancels: ``1 / sqrt(1 + x^2)``, ``1 / sqrt(t (t + 2))`` with ``t = x - 1``
    (exact near 1), ``1 / ((1 - x)(1 + x))``."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if name == "asinh":
            a = np.abs(x)
            return np.where(a > 1, 1 / (a * np.sqrt(1 + (1 / a) ** 2)), 1 / np.sqrt(1 + x * x))
        if name == "acosh":
            t = x - 1
            return 1 / (np.sqrt(t) * np.sqrt(t + 2))
        return 1 / ((1 - x) * (1 + x))


@pytest.mark.parametrize(("name", "x"), [("asinh", MAGNITUDES), ("acosh", NEAR_ONE), ("atanh", INSIDE_ONE)])
def test_inverse_hyperbolic_slopes_are_exact(name, x):
    """``asinh(1e-10)``'s slope is 1 and ``asinh(1e10)``'s 1e-10; ``acosh``'s is inf at 1 and ``atanh``'s at +-1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        got = kiln.grad(lambda t: getattr(t, name)().sum())(x)
    want = _slope(name, x)
    inside = ~np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), ~inside)
    np.testing.assert_allclose(got[inside], want[inside], rtol=2e-15, atol=0)


@pytest.mark.parametrize(("name", "x"), [("asinh", np.array([1e-10, -1e-10, 1e10, -1e10, 0.3, -2.5, 0.0])),
                                         ("acosh", np.array([1.5, 2.0, 10.0, 1e10])),
                                         ("atanh", np.array([1e-12, -1e-12, 0.3, -0.49, 0.5, 0.7, 0.0]))])
def test_inverse_hyperbolic_gradients_match_torch_where_its_formula_is_accurate(name, x):
    _check(lambda t: getattr(t, name)(), lambda t: getattr(t, name)(), x)


def test_cumprod_gradient_with_zeros_matches_torch():
    """Lanes with no zero, one (first, middle, last), two and three zeros, along a symbolic batch."""
    torch = require("torch")
    x = RNG.uniform(0.5, 1.5, (6, 5)) * RNG.choice([-1.0, 1.0], (6, 5))
    for row, zeros in enumerate([[], [0], [2], [4], [1, 3], [0, 2, 4]]):
        x[row, zeros] = 0.0
    w = RNG.standard_normal((6, 5))
    graph = kiln.trace(lambda t: t.cumprod(1), kiln.TensorSpec(("N", 5), "float64"))
    got = kiln.grad(lambda t: (t.cumprod(1) * w).sum())(x)
    tensor = torch.tensor(x, requires_grad=True)
    (tensor.cumprod(1) * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(NumpyBackend().compile(graph)(x)[0], torch.tensor(x).cumprod(1).numpy())
    np.testing.assert_allclose(got, tensor.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_cumprod_dtypes_follow_torch():
    graph = kiln.trace(lambda x: ((x > 0).cumprod(0), (x * 3).int().cumprod(1), x.cumprod(0, dtype=kiln.float64), (x * 3).long().cumprod(-1)),
                       kiln.TensorSpec((2, 3)))
    assert [v.type.dtype.value for v in graph.outputs] == ["i64", "i64", "f64", "i64"]
    x = np.array([[0.5, -1.0, 2.0], [1.0, 0.2, -0.7]], np.float32)
    got = NumpyBackend().compile(graph)(x)
    torch = require("torch")
    t = torch.tensor(x)
    want = ((t > 0).cumprod(0), (t * 3).int().cumprod(1), t.cumprod(0, dtype=torch.float64), (t * 3).long().cumprod(-1))
    for g, w in zip(got, want):
        assert g.dtype == w.numpy().dtype
        np.testing.assert_array_equal(g, w.numpy())


def test_cumprod_out_of_range_dim_names_the_line_and_the_rank():
    with pytest.raises(kiln.TraceError, match=r"test_inverse_trig_cumprod_vs_torch.py:\d+ .*\n.*Dimension out of range \(expected to be in range of \[-2, 1\], but got 5\)"):
        kiln.trace(lambda x: x.cumprod(5), kiln.TensorSpec((2, 3)))


def test_functional_forms_are_exported():
    for name in ("atan", "asin", "acos", "arctan", "arcsin", "arccos", "atan2", "arctan2", "asinh", "acosh", "atanh", "arcsinh",
                 "arccosh", "arctanh", "cumprod"):
        assert callable(getattr(kiln, name)) and name in kiln.__all__
    assert math.isclose(float(_run(lambda t: kiln.atan2(t, -t), np.array([1.0]))[0][0]), 3 * math.pi / 4)
