"""Op-table rows of the LDL^T ops (``compiler/ops/linalg_ldl.py``), appended to ``LINALG_ROWS``.

References: SciPy's ``dsytrf`` (LAPACK itself, which PyTorch calls) for ``ldl_factor`` and ``ldl_pivots``; for
``ldl_solve``, ``A`` rebuilt from ``(LD, pivots)`` by LAPACK's definition ``A = (P1 L1 P2 L2 ...) D (...)^T`` and
solved with ``np.linalg.solve``. Inputs: symmetric indefinite matrices ``Q diag(+-[1, 2]) Q^T`` (condition at most 2):
their diagonals are small next to their columns often enough that over half of the 4x4 ones take a 2x2 block, most
an interchange. None of the
ops has a derivative (PyTorch has none): the cases are ``grad=False``.
"""

from __future__ import annotations

import numpy as np

from ops3.ldl_reference import rebuilt, symmetric_indefinite
from ops.op_table import Case, OpRow
from oracles import require


def _sytrf(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lapack = require("scipy.linalg.lapack")
    ld, pivots, info = lapack.dsytrf(np.asarray(a, np.float64), lower=1)
    assert info == 0, f"dsytrf info {info}: the row's inputs must be nonsingular"
    return np.tril(ld), pivots.astype(np.int32)


def _per_matrix(function, dtype=None):
    def batched(a):
        results = [function(a[index]) for index in np.ndindex(*a.shape[:-2])]
        return np.array(results).reshape(a.shape[:-2] + np.shape(results[0])).astype(dtype or a.dtype)

    return batched


def _solve(ld, pivots, b):
    batch = np.broadcast_shapes(ld.shape[:-2], b.shape[:-2])
    ld, b = np.broadcast_to(ld, batch + ld.shape[-2:]), np.broadcast_to(b, batch + b.shape[-2:])
    pivots = np.broadcast_to(pivots, batch + pivots.shape[-1:])
    results = [np.linalg.solve(rebuilt(np.asarray(ld[i], np.float64), pivots[i]), b[i]) for i in np.ndindex(*batch)]
    return np.array(results).reshape(batch + b.shape[-2:]).astype(b.dtype)


def indefinite_matrices(rng, shapes, dtypes, attrs):
    (shape,) = shapes
    return [symmetric_indefinite(rng, shape[-1], tuple(shape[:-2]))]


def factored_and_right_hand_sides(rng, shapes, dtypes, attrs):
    """``(LD, pivots)`` of symmetric indefinite matrices (LAPACK's), and a standard normal ``B``."""
    ld_shape, _, b_shape = shapes
    a = symmetric_indefinite(rng, ld_shape[-1], tuple(ld_shape[:-2]))
    factors = [_sytrf(a[index]) for index in np.ndindex(*a.shape[:-2])]
    ld = np.array([f[0] for f in factors]).reshape(a.shape)
    pivots = np.array([f[1] for f in factors]).reshape(a.shape[:-1])
    return [ld, pivots, rng.standard_normal(b_shape)]


FACTOR_CASES = tuple(Case((shape,), grad=False) for shape in ((3, 3), ("N", 4, 4), (2, 5, 5), (1, 1), ("N", 2, 3, 3)))
SOLVE_CASES = tuple(
    Case(shapes, grad=False, operand_dtypes=(None, "i32", None))
    for shapes in (((3, 3), (3,), (3, 2)), (("N", 4, 4), ("N", 4), (4, 1)), ((3, 3), (3,), ("N", 3, 2)), ((2, 5, 5), (2, 5), (2, 5, 3)))
)

LDL_ROWS = [
    OpRow("linalg.ldl_factor", _per_matrix(lambda a: _sytrf(a)[0]), FACTOR_CASES, indefinite_matrices),
    OpRow("linalg.ldl_pivots", _per_matrix(lambda a: _sytrf(a)[1], np.int32), FACTOR_CASES, indefinite_matrices, differentiable=False),
    OpRow("linalg.ldl_solve", _solve, SOLVE_CASES, factored_and_right_hand_sides),
]
