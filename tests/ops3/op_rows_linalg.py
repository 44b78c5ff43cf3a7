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
