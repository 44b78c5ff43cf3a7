"""Op-table rows of the ``linalg`` dialect (``compiler/ops/linalg.py``), appended to ``EXTRA_ROWS``.

References are the textbook formulas in float64, one matrix at a time (``np.linalg`` is the kernel, so it is not
the reference): Leibniz's sum over permutations for the determinant, the adjugate over the determinant for the
inverse, the Cholesky-Banachiewicz loop, forward and back substitution. Inputs are well conditioned: a random
matrix plus a multiple of the identity, ``M M^T + n I`` for Cholesky, a triangle with a heavy diagonal.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ops.op_table import Case, OpRow

# Input generators.


def _diagonally_heavy(rng, shape):
    n = shape[-1]
    return rng.standard_normal(shape) * 0.5 + np.eye(n) * rng.choice([-2.0, 2.0], shape[:-1])[..., None]


def well_conditioned(rng, shapes, dtypes, attrs):
    """The first operand a matrix with a diagonal of +-2 over entries of scale 0.5 (condition numbers near 2);
    the others (right-hand sides) standard normal."""
    return [_diagonally_heavy(rng, shapes[0])] + [rng.standard_normal(shape) for shape in shapes[1:]]


def positive_definite(rng, shapes, dtypes, attrs):
    """``M M^T / n + I``: symmetric, eigenvalues in [1, 1 + a few]."""
    (shape,) = shapes
    m = rng.standard_normal(shape)
    return [m @ np.swapaxes(m, -1, -2) / shape[-1] + np.eye(shape[-1])]


# References, one matrix at a time.


def _per_matrix(function):
    def batched(a, *rest, **attrs):
        """``function`` on every matrix of the batch, the others broadcast against ``a``'s batch dims."""
        batch = np.broadcast_shapes(a.shape[:-2], *(r.shape[:-2] for r in rest))
        a = np.broadcast_to(a, batch + a.shape[-2:])
        rest = [np.broadcast_to(r, batch + r.shape[-2:]) for r in rest]
        results = [function(a[index], *(r[index] for r in rest), **attrs) for index in np.ndindex(*batch)]
        return np.array(results, np.float64).reshape(batch + np.shape(results[0])).astype(a.dtype)

    return batched


def _permutation_sign(permutation) -> int:
    inversions = sum(1 for i, j in itertools.combinations(range(len(permutation)), 2) if permutation[i] > permutation[j])
    return -1 if inversions % 2 else 1


def _leibniz(a):
    # det A = sum over permutations s of sign(s) prod_i a[i, s(i)]
    n = len(a)
    return sum(_permutation_sign(s) * math.prod(float(a[i, s[i]]) for i in range(n)) for s in itertools.permutations(range(n)))


def _adjugate_inverse(a):
    # A^-1 = adj(A) / det A, adj(A)[j, i] = (-1)^(i+j) det(A without row i and column j)
    n = len(a)
    minor = lambda i, j: np.delete(np.delete(a, i, 0), j, 1)
    adjugate = np.array([[(-1) ** (i + j) * _leibniz(minor(i, j)) if n > 1 else 1.0 for i in range(n)] for j in range(n)])
    return adjugate / _leibniz(a)


def _cholesky(a):
    # L[i, j] = (A[i, j] - sum_k<j L[i, k] L[j, k]) / L[j, j], L[j, j] = sqrt(A[j, j] - sum_k<j L[j, k]^2), of (A + A^T) / 2
    a = (np.asarray(a, np.float64) + np.asarray(a, np.float64).T) / 2
    n = len(a)
    lower = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            rest = a[i, j] - sum(lower[i, k] * lower[j, k] for k in range(j))
            lower[i, j] = math.sqrt(rest) if i == j else rest / lower[j, j]
    return lower


def _substitution(a, b, *, upper, unitriangular):
    # forward (lower) or back (upper) substitution: x_i = (b_i - sum_{j before i} T[i, j] x_j) / T[i, i]
    n = len(a)
    x = np.zeros(np.shape(b))
    for i in reversed(range(n)) if upper else range(n):
        others = range(i + 1, n) if upper else range(i)
        rest = b[i] - sum(a[i, j] * x[j] for j in others)
        x[i] = rest if unitriangular else rest / a[i, i]
    return x


_det = _per_matrix(_leibniz)
_inv = _per_matrix(_adjugate_inverse)
_solve = _per_matrix(lambda a, b: _adjugate_inverse(a) @ b)
_logabsdet = _per_matrix(lambda a: math.log(abs(_leibniz(a))))
_det_sign = _per_matrix(lambda a: float(np.sign(_leibniz(a))))
_cholesky_batched = _per_matrix(_cholesky)
_solve_triangular = _per_matrix(_substitution)

SQUARE_CASES = tuple(Case((shape,)) for shape in ((3, 3), (2, 4, 4), ("N", 3, 3), (1, 1), ("N", 2, 2, 2)))
SOLVE_CASES = (
    Case(((3, 3), (3, 2))),
    Case((("N", 3, 3), (3, 1))),  # B broadcast over A's batch
    Case(((3, 3), ("N", 3, 2))),  # A broadcast over B's batch
    Case(((2, 4, 4), (2, 4, 3))),
)
TRIANGULAR_CASES = tuple(
    Case((a, b), {"upper": upper, "unitriangular": unit})
    for (a, b), upper, unit in (((("N", 3, 3), (3, 2)), False, False), (((3, 3), ("N", 3, 2)), True, False),
                                (((2, 4, 4), (2, 4, 1)), False, True), ((("N", 3, 3), ("N", 3, 2)), True, True))
)

LINALG_ROWS = [
    OpRow("linalg.inv", _inv, SQUARE_CASES, well_conditioned),
    OpRow("linalg.solve", _solve, SOLVE_CASES, well_conditioned),
    OpRow("linalg.det", _det, SQUARE_CASES, well_conditioned),
    OpRow("linalg.logabsdet", _logabsdet, SQUARE_CASES, well_conditioned),
    OpRow("linalg.det_sign", _det_sign, SQUARE_CASES, well_conditioned, differentiable=False),
    OpRow("linalg.cholesky", _cholesky_batched, SQUARE_CASES, positive_definite),
    OpRow("linalg.solve_triangular", _solve_triangular, TRIANGULAR_CASES, well_conditioned),
]


# The factorizations (compiler/ops/linalg_factor.py): textbook loops, one matrix at a time.


def _householder_qr(a, *, mode):
    # LAPACK's reflectors: H = I - tau v v^T with v[0] = 1, R[j, j] = -sign(x_0) |x|; none (tau = 0) for a zero tail
    m, n = a.shape
    r, q = np.array(a, np.float64), np.eye(m)
    for j in range(min(m, n)):
        x = r[j:, j].copy()
        tail = float(np.linalg.norm(x[1:]))
        if tail == 0:
            continue
        beta = -math.copysign(math.hypot(x[0], tail), x[0])
        v = np.concatenate([[1.0], x[1:] / (x[0] - beta)])
        tau = (beta - x[0]) / beta
        r[j:, :] -= tau * np.outer(v, v @ r[j:, :])
        q[:, j:] -= tau * np.outer(q[:, j:] @ v, v)
    k = m if mode == "complete" else min(m, n)
    return q[:, :k], np.triu(r)[:k, :]


def _pivoted_lu(a):
    # Doolittle with partial pivoting: swap in the row of the largest |a[i, j]|, eliminate below; 1-based pivots
    lu, (m, n) = np.array(a, np.float64), a.shape
    pivots = []
    for j in range(min(m, n)):
        p = j + int(np.argmax(np.abs(lu[j:, j])))
        pivots.append(p + 1)
        lu[[j, p]] = lu[[p, j]]
        for i in range(j + 1, m):
            lu[i, j] = lu[i, j] / lu[j, j] if lu[j, j] != 0 else lu[i, j]
            lu[i, j + 1 :] -= lu[i, j] * lu[j, j + 1 :]
    return lu, np.array(pivots)


def _permutation(pivots, *, size):
    # row i swapped with row pivots[i] - 1, in turn, starting from 0 .. size - 1
    perm = list(range(size))
    for i, p in enumerate(pivots):
        perm[i], perm[p - 1] = perm[p - 1], perm[i]
    return np.array(perm)


def _taylor_exp(a):
    # exp(A) = (sum_k<30 (A / 2^s)^k / k!)^(2^s), |A / 2^s| <= 1/2
    a = np.asarray(a, np.float64)
    squarings = max(0, math.ceil(math.log2(max(np.abs(a).sum(0).max(), 1e-300) * 2)))
    x, term, total = a / 2.0**squarings, np.eye(len(a)), np.eye(len(a))
    for k in range(1, 30):
        term = term @ x / k
        total = total + term
    for _ in range(squarings):
        total = total @ total
    return total


def _first_indefinite_minor(a):
    # Sylvester: the first k whose leading k x k minor of (A + A^T) / 2 is not positive (0: all are)
    symmetric = (np.asarray(a, np.float64) + np.asarray(a, np.float64).T) / 2
    return next((k for k in range(1, len(a) + 1) if _leibniz(symmetric[:k, :k]) <= 0), 0)


def _per_matrix_of(function, dtype, core_rank: int = 2):
    """``function`` on every core (a matrix, or a vector of pivots with ``core_rank=1``), the result in ``dtype``."""
    def batched(a, **attrs):
        batch = a.shape[: a.ndim - core_rank]
        results = [function(a[index], **attrs) for index in np.ndindex(*batch)]
        return np.array(results).reshape(batch + np.shape(results[0])).astype(dtype)

    return batched


def full_rank(rng, shapes, dtypes, attrs):
    """``(..., m, n)`` matrices with +-2 on the main diagonal over entries of scale 0.5: well conditioned, square or not."""
    (shape,) = shapes
    return [rng.standard_normal(shape) * 0.5 + np.eye(*shape[-2:]) * rng.choice([-2.0, 2.0], shape[:-2] + (1, shape[-1]))]


def random_pivots(rng, shapes, dtypes, attrs):
    """Valid LU pivots: ``pivots[i]`` in ``[i + 1, size]``."""
    (shape,) = shapes
    return [rng.integers(np.arange(1, shape[-1] + 1), attrs["size"] + 1, shape)]


def symmetric_mixed(rng, shapes, dtypes, attrs):
    """Symmetric, diagonal +-2 over entries of scale 0.5: some positive definite, some failing at a leading minor."""
    a = _diagonally_heavy(rng, shapes[0])
    return [(a + np.swapaxes(a, -1, -2)) / 2]


def passing_check(rng, shapes, dtypes, attrs):
    """A standard normal ``x`` and all-zero ``info`` (the check passes)."""
    return [rng.standard_normal(shapes[0]), np.zeros(shapes[1])]


_qr_q = _per_matrix(lambda a, *, mode: _householder_qr(a, mode=mode)[0])
_qr_r = _per_matrix(lambda a, *, mode: _householder_qr(a, mode=mode)[1])
_lu_factor = _per_matrix(lambda a: _pivoted_lu(a)[0])
_lu_pivots = _per_matrix_of(lambda a: _pivoted_lu(a)[1], np.int32)
_matrix_exp = _per_matrix(_taylor_exp)
_cholesky_info = _per_matrix_of(_first_indefinite_minor, np.int32)

QR_CASES = tuple(
    Case((shape,), {"mode": mode})
    for shape, mode in ((("N", 4, 3), "reduced"), ((3, 3), "complete"), ((2, 3, 5), "reduced"), (("N", 2, 4), "complete"),
                        ((1, 1), "reduced"), ((5, 2), "reduced"))
)
RECTANGULAR_CASES = tuple(Case((shape,)) for shape in ((3, 3), ("N", 4, 4), (2, 5, 3), ("N", 3, 5), (1, 1)))
PERMUTATION_CASES = (Case((("N", 4),), {"size": 4}), Case(((2, 3),), {"size": 5}), Case(((1,),), {"size": 1}))
CHECKED_CASES = (Case((("N", 3, 3), ("N",)), operand_dtypes=(None, "i32")), Case(((2, 3), ()), operand_dtypes=(None, "i32")))

LINALG_ROWS += [
    OpRow("linalg.qr_q", _qr_q, QR_CASES, full_rank),
    OpRow("linalg.qr_r", _qr_r, QR_CASES, full_rank),
    OpRow("linalg.lu_factor", _lu_factor, RECTANGULAR_CASES, full_rank),
    OpRow("linalg.lu_pivots", _lu_pivots, RECTANGULAR_CASES, full_rank, differentiable=False),
    OpRow("linalg.pivots_to_permutation", _per_matrix_of(_permutation, np.int64, core_rank=1), PERMUTATION_CASES, random_pivots,
          differentiable=False, dtypes=("i32", "i64")),
    OpRow("linalg.matrix_exp", _matrix_exp, SQUARE_CASES, well_conditioned),
    OpRow("linalg.cholesky_info", _cholesky_info, SQUARE_CASES, symmetric_mixed, differentiable=False),
    OpRow("linalg.checked", lambda x, info, **attrs: x, CHECKED_CASES, passing_check),
]

from ops3.op_rows_linalg_ldl import LDL_ROWS  # noqa: E402  (the LDL^T rows: compiler/ops/linalg_ldl.py)

LINALG_ROWS += LDL_ROWS
