"""``frontend/tensor_math.py``'s methods and the ``kiln.*`` functions built on them against PyTorch in float64:
values and gradients to rtol 1e-10 (log1p/expm1/sinh near 0 where cancellation would lose digits, hypot at huge
and tiny magnitudes, logaddexp with infinities), the small linear algebra (diag, diagonal, kron, diff), sorting
statistics (kthvalue, median), searchsorted/bucketize, meshgrid, trapezoid, and randint's range and spread."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(13)
X = RNG.standard_normal((3, 4))
Y = RNG.standard_normal((3, 4))
SMALL = np.array([[1e-12, -3e-9, 2e-5, -0.4], [0.7, -0.99, 3.0, -0.5]])


def _lib(name):
    return kiln if name == "kiln" else require("torch")


MATH = {  # (function of (library, x, y), inputs)
    "log1p_expm1_small": (lambda lib, x, y: (x.log1p() + x.expm1() * y, lib.log1p(x)), (SMALL, X[:2])),
    "logs_and_exps": (lambda lib, x, y: (x.abs().log2() * y + x.abs().log10() + x.exp2(), lib.exp2(y)), (X, Y)),
    "hyperbolic": (lambda lib, x, y: (x.sinh() * y + x.cosh() + (x * 0.5).tan(), lib.sinh(SMALL_T(lib))), (X, Y)),
    "erf": (lambda lib, x, y: x.erf() * y, (X, Y)),
    "hypot": (lambda lib, x, y: (x.hypot(y), (x * 1e200).hypot(y * 1e200) * 1e-200, (x * 1e-200).hypot(y * 1e-200) * 1e200), (X, Y)),
    "logaddexp": (lambda lib, x, y: (x.logaddexp(y) * 2, lib.logaddexp(x * 30, y * 30)), (X, Y)),
    "products": (lambda lib, x, y: (x.addcmul(x, y, value=0.5) + x.addcdiv(y, x.abs() + 1, value=2),
                                    x[:, :3].addmm(x, y.t()[:, :3], beta=0.5, alpha=2),
                                    x[:, :3].unsqueeze(0).baddbmm(x.unsqueeze(0), y.t()[:, :3].unsqueeze(0), alpha=0.5)), (X, Y)),
    "diag_diagonal": (lambda lib, x, y: (x[0].diag() + x[0].diag(0), x[1].diag(2), x[2].diag(-1), x.diag(), x.diagonal(1), x.diagonal(-2),
                                          x.reshape(3, 2, 2).diagonal(0, 1, 2), x.reshape(2, 3, 2).diagonal(1, 0, 1)), (X, Y)),
    "diff": (lambda lib, x, y: (x.diff(), x.diff(2, 0), x.diff(dim=1, prepend=y[:, :1], append=y[:, 1:2])), (X, Y)),
    "kron_take": (lambda lib, x, y: (x.kron(y[:2, :3]), x[0].kron(y[1]), x.take(TAKE_T(lib))), (X, Y)),
    "kthvalue_median": (lambda lib, x, y: (x.kthvalue(2, 1).values * 3, x.kthvalue(3, 0, keepdim=True)[1], x.median(), x.median(1)[0],
                                            x.median(dim=0, keepdim=True).indices), (X, Y)),
    "heaviside_nan_to_num": (lambda lib, x, y: (x.detach().heaviside(y.detach()), SPECIAL_T(lib).nan_to_num(), SPECIAL_T(lib).nan_to_num(1.0, 2.0, -3.0)), (X, Y)),
}


def SMALL_T(lib):  # noqa: N802  (constants made by either library: kiln.tensor in a trace, torch.tensor)
    return lib.tensor(SMALL)


def TAKE_T(lib):  # noqa: N802
    return lib.tensor(np.array([[0, 11], [5, 5]]))


def SPECIAL_T(lib):  # noqa: N802
    return lib.tensor(np.array([math.nan, math.inf, -math.inf, 1.5]))


@pytest.mark.parametrize("name", MATH)
def test_math_matches_torch(name):
    fn, arrays = MATH[name]
    differentiable = name not in ("heaviside_nan_to_num",)
    _check(lambda *xs: fn(kiln, *xs), lambda *xs: fn(_lib("torch"), *xs), *arrays, grad=differentiable)


def test_search_bucketize_meshgrid_trapezoid_match_torch():
    torch = require("torch")
    boundaries = np.array([-1.0, 0.0, 0.0, 0.5, 2.0])
    rows = np.sort(RNG.standard_normal((3, 6)), axis=1)

    def searches(lib, x, b, r):
        grid = lib.meshgrid(b, x[0], indexing="ij")
        cartesian = lib.meshgrid(b, x[0], indexing="xy")
        return (lib.searchsorted(b, x), lib.searchsorted(b, x, right=True), lib.bucketize(x, b), lib.bucketize(x, b, right=True),
                lib.searchsorted(r, x[:, :2]), grid[0] * 1.0, grid[1] * 1.0, cartesian[0] * 1.0, cartesian[1] * 1.0,
                lib.trapezoid(x), lib.trapezoid(x, b[:4], dim=1), lib.trapz(x, dx=0.5, dim=0))

    probes = np.concatenate([X[:, :2], np.array([[0.0, 0.5], [2.0, -1.0], [-3.0, 9.0]])], axis=1)
    _check(lambda x, b, r: searches(kiln, x, b, r), lambda x, b, r: searches(torch, x, b, r), probes, boundaries, rows, grad=False)


def test_randint_is_in_range_and_uniform():
    graph = kiln.trace(lambda x: x + kiln.randint(3, 7, (200, 50)).double(), kiln.TensorSpec((200, 50), "float64"))
    draws = NumpyBackend().compile(graph)(np.zeros((200, 50)), np.int64(5))[0]
    counts = np.bincount(draws.astype(int).ravel(), minlength=7)
    assert counts[:3].sum() == 0 and draws.max() == 6 and np.all(np.abs(counts[3:] / draws.size - 0.25) < 0.01)
