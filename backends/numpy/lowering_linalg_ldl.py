"""NumPy kernels of the LDL^T ops (``compiler/ops/linalg_ldl.py``), in the one ``NUMPY`` table.

NumPy has no ``sytrf``, so ``bunch_kaufman`` is LAPACK's unblocked ``dsytf2`` (lower) written over one matrix at a
time, step for step: the pivot test with ``alpha = (1 + sqrt(17)) / 8``, the same interchanges, the rank-1 (1x1
block) and rank-2 (2x2 block) updates in LAPACK's order of operations, ``info`` for a zero (or NaN) column left in
place. PyTorch calls the blocked ``sytrf``, which runs ``sytf2`` on matrices of up to its block size (64 in the
reference LAPACK) and the same pivoting on larger ones, so ``LD`` agrees to rounding and the pivots exactly.
``ldl_solve`` is ``dsytrs``: ``L D`` forward, then ``L^T`` backward, each interchange where ``sytrs`` makes it.

The loops branch on each matrix's values (the pivot test), so the batch is a Python loop over matrices; the work
inside a step is vectorised. The CuPy backend re-binds this module (``np`` is CuPy there): the same loop over device
arrays, each pivot test reading one number back.
"""

from __future__ import annotations

import math

import numpy as np

from kiln.backends.numpy.lowering import NUMPY
from kiln.backends.numpy.lowering_linalg import LinAlgError

ALPHA = (1.0 + math.sqrt(17.0)) / 8.0
"""Bunch and Kaufman's pivot threshold: it bounds the growth of ``L`` and ``D`` best (LAPACK's ``ALPHA``)."""


def _swap(a, first, second) -> None:
    """Exchange two equal-shaped views of ``a`` (index tuples); fancy indexing reads copies first."""
    a[first], a[second] = a[second].copy(), a[first].copy()


def _pivot(a, k: int) -> tuple[int, int]:
    """``(kp, kstep)`` of ``dsytf2``'s pivot test at column ``k``; ``kp = -1`` when the column is zero or NaN."""
    n = a.shape[0]
    absakk = abs(float(a[k, k]))
    imax, colmax = k, 0.0
    if k < n - 1:
        column = np.abs(a[k + 1 :, k])
        imax = k + 1 + int(np.argmax(column))
        colmax = float(column[imax - k - 1])
    if max(absakk, colmax) == 0.0 or math.isnan(absakk):
        return -1, 1
    if absakk >= ALPHA * colmax:
        return k, 1
    rowmax = float(np.abs(a[imax, k:imax]).max())  # the largest off-diagonal entry of row imax (lower triangle)
    if imax < n - 1:
        rowmax = max(rowmax, float(np.abs(a[imax + 1 :, imax]).max()))
    if absakk >= ALPHA * colmax * (colmax / rowmax):
        return k, 1
    if abs(float(a[imax, imax])) >= ALPHA * rowmax:
        return imax, 1
    return imax, 2


def _interchange(a, k: int, kk: int, kp: int, kstep: int) -> None:
    """Swap rows and columns ``kk`` and ``kp`` of the trailing lower triangle ``A[k:, k:]``."""
    _swap(a, (slice(kp + 1, None), kk), (slice(kp + 1, None), kp))
    _swap(a, (slice(kk + 1, kp), kk), (kp, slice(kk + 1, kp)))
    _swap(a, (kk, kk), (kp, kp))
    if kstep == 2:
        _swap(a, (k + 1, k), (kp, k))


def _eliminate_one(a, k: int) -> None:
    """The 1x1 block at ``k``: ``A22 -= x x^T / d``, then ``L``'s column ``x / d`` (``dsyr`` and ``dscal``)."""
    d = a[k, k]
    if abs(float(d)) >= np.finfo(a.dtype).tiny:
        inverse = 1 / d
        a[k + 1 :, k + 1 :] += np.outer(a[k + 1 :, k], -inverse * a[k + 1 :, k])
        a[k + 1 :, k] *= inverse
    else:  # 1 / d would overflow: divide instead (LAPACK's sfmin branch)
        a[k + 1 :, k] /= d
        a[k + 1 :, k + 1 :] += np.outer(a[k + 1 :, k], -d * a[k + 1 :, k])


def _eliminate_two(a, k: int) -> None:
    """The 2x2 block at ``k, k + 1``: ``L``'s two columns ``W D^-1`` and ``A22 -= W D^-1 W^T``, as ``dsytf2``."""
    d21 = a[k + 1, k]
    d11, d22 = a[k + 1, k + 1] / d21, a[k, k] / d21
    t = 1 / (d11 * d22 - 1)
    d21 = t / d21
    wk = d21 * (d11 * a[k + 2 :, k] - a[k + 2 :, k + 1])
    wkp1 = d21 * (d22 * a[k + 2 :, k + 1] - a[k + 2 :, k])
    a[k + 2 :, k + 2 :] -= np.outer(a[k + 2 :, k], wk)
    a[k + 2 :, k + 2 :] -= np.outer(a[k + 2 :, k + 1], wkp1)
    a[k + 2 :, k], a[k + 2 :, k + 1] = wk, wkp1


def bunch_kaufman(matrix):
    """``(LD, pivots)`` of one ``(n, n)`` matrix's lower triangle, as ``dsytf2`` leaves them (``LD`` lower)."""
    a = np.tril(matrix)  # a copy; the steps read and write the lower triangle only
    n = a.shape[0]
    pivots, k = [], 0
    while k < n:
        kp, kstep = _pivot(a, k)
        if kp < 0:  # a zero (or NaN) column: D[k, k] stays as it is, nothing to eliminate (info = k + 1)
            pivots.append(k + 1)
            k += 1
            continue
        kk = k + kstep - 1
        if kp != kk:
            _interchange(a, k, kk, kp, kstep)
        if kstep == 1:
            _eliminate_one(a, k)
            pivots.append(kp + 1)
        else:
            _eliminate_two(a, k)
            pivots += [-(kp + 1), -(kp + 1)]
        k += kstep
    return np.tril(a), pivots


def _factor_batch(a):
    """``(LD, pivots)`` of every matrix of ``a``."""
    *batch, n, _ = a.shape
    factors = [bunch_kaufman(matrix) for matrix in a.reshape(int(np.prod(batch)), n, n)]
    ld = np.stack([ld for ld, _ in factors]) if factors else np.zeros((0, n, n), a.dtype)
    pivots = np.asarray([p for _, p in factors], dtype=np.int32).reshape(*batch, n)
    return ld.reshape(a.shape), pivots


@NUMPY.register("linalg.ldl_factor")
def ldl_factor(a):
    return _factor_batch(a)[0]


@NUMPY.register("linalg.ldl_pivots")
def ldl_pivots(a):
    return _factor_batch(a)[1]


def _check_pivots(pivots, n: int) -> None:
    """``sytrf``'s pivots: ``1 <= |p[k]| <= n`` (the 2x2 blocks' pairs are checked as they are met)."""
    bad = (pivots == 0) | (np.abs(pivots) > n)
    if bool(bad.any()):
        raise LinAlgError(f"linalg.ldl_solve: pivots must lie in [1, {n}] or [-{n}, -1] (LDL pivots are 1-based rows, "
                          "negative for a 2x2 block); pass the pivots ldl_factor returned")


def _solve_one(ld, pivots: list[int], b):
    """``dsytrs`` (lower) for one matrix: ``X`` with ``A X = B``, ``A = P L D L^T P^T`` from ``sytrf``."""
    n, x, k = ld.shape[0], b.copy(), 0
    while k < n:  # L D X = B, left to right
        if pivots[k] > 0:
            kp = pivots[k] - 1
            if kp != k:
                _swap(x, (k,), (kp,))
            x[k + 1 :] -= np.outer(ld[k + 1 :, k], x[k])
            x[k] *= 1 / ld[k, k]
            k += 1
            continue
        if k + 1 == n or pivots[k + 1] != pivots[k]:
            raise LinAlgError(f"linalg.ldl_solve: pivot {k + 1} is negative (a 2x2 block) but pivot {k + 2} does not "
                              "repeat it; pass the pivots ldl_factor returned")
        kp = -pivots[k] - 1
        if kp != k + 1:
            _swap(x, (k + 1,), (kp,))
        x[k + 2 :] -= np.outer(ld[k + 2 :, k], x[k])
        x[k + 2 :] -= np.outer(ld[k + 2 :, k + 1], x[k + 1])
        akm1k = ld[k + 1, k]
        akm1, ak = ld[k, k] / akm1k, ld[k + 1, k + 1] / akm1k
        denominator = akm1 * ak - 1
        bkm1, bk = x[k] / akm1k, x[k + 1] / akm1k
        x[k], x[k + 1] = (ak * bkm1 - bk) / denominator, (akm1 * bk - bkm1) / denominator
        k += 2
    k = n - 1
    while k >= 0:  # L^T X = Y, right to left
        step = 1 if pivots[k] > 0 else 2
        x[k] -= ld[k + 1 :, k] @ x[k + 1 :]
        if step == 2:
            x[k - 1] -= ld[k + 1 :, k - 1] @ x[k + 1 :]
        kp = abs(pivots[k]) - 1
        if kp != k:
            _swap(x, (k,), (kp,))
        k -= step
    return x


@NUMPY.register("linalg.ldl_solve")
def ldl_solve(ld, pivots, b):
    n = ld.shape[-1]
    _check_pivots(pivots, n)
    batch = np.broadcast_shapes(ld.shape[:-2], b.shape[:-2])
    count = int(np.prod(batch))
    lds = np.broadcast_to(ld, batch + ld.shape[-2:]).reshape(count, n, n)
    rows = np.broadcast_to(pivots, batch + (n,)).reshape(count, n).tolist()
    rights = np.broadcast_to(b, batch + b.shape[-2:]).reshape((count,) + b.shape[-2:])
    solved = [_solve_one(ld_k, rows_k, b_k) for ld_k, rows_k, b_k in zip(lds, rows, rights)]
    return (np.stack(solved) if solved else np.zeros(rights.shape, b.dtype)).reshape(batch + b.shape[-2:])
