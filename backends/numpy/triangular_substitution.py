"""Triangular solves by substitution, batched, in NumPy: the ``linalg.solve_triangular`` kernel.

LAPACK's ``trtrs`` (PyTorch's ``solve_triangular``, and ``potrs`` behind ``cholesky_solve``: two of them) is BLAS's
``trsm``: forward (lower) or back (upper) substitution, a block of rows at a time, the rows below a solved block
updated by one matrix product. Its error is that of the substitution, usually far below ``cond(T) * eps``; an LU
solve of the same triangle pivots rows where an off-diagonal entry beats the diagonal, and its answer then agrees
only to ``cond * eps``. NumPy has no ``trsm`` (SciPy's is not a dependency, nor batched), so this is one:

    for each block of BLOCK rows (from the top for a lower triangle, from the bottom for an upper one):
        each row r of the block:  X[r] = (B[r] - T[r, block rows solved so far] @ X[those]) / T[r, r]
        the rows still to solve:  B[rest] -= T[rest, block] @ X[block]        (one batched matmul)

Each step runs over every matrix of the batch and every right-hand side at once; a Python loop runs over rows only.
A zero on the diagonal divides by zero as LAPACK's ``trsm`` does (inf or NaN, no error: PyTorch's too). The CuPy
backend re-binds this module (``np`` is CuPy there), so the same loop runs on device arrays.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
"""Rows solved one by one before the rest are updated by a matrix product (BLAS's trsm blocks similarly)."""


def solve_by_substitution(a, b, *, upper: bool, unitriangular: bool):
    """``X`` with ``T X = B``, ``T`` the upper or lower triangle of ``a (..., n, n)`` (its diagonal read as ones with
    ``unitriangular``), ``b (..., n, k)``; the batch dims broadcast."""
    n = a.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    x = np.array(np.broadcast_to(b, batch + b.shape[-2:]), dtype=np.result_type(a, b))
    blocks = [(start, min(start + BLOCK, n)) for start in range(0, n, BLOCK)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for start, stop in reversed(blocks) if upper else blocks:
            _solve_block(a, x, start, stop, upper, unitriangular)
            rest = slice(0, start) if upper else slice(stop, n)
            x[..., rest, :] -= a[..., rest, start:stop] @ x[..., start:stop, :]
    return x


def _solve_block(a, x, start: int, stop: int, upper: bool, unitriangular: bool) -> None:
    """Rows ``start:stop`` of ``x`` solved in place against the diagonal block, one row at a time (the rows outside
    the block already subtracted)."""
    rows = range(stop - 1, start - 1, -1) if upper else range(start, stop)
    for row in rows:
        solved = slice(row + 1, stop) if upper else slice(start, row)
        if solved.start < solved.stop:
            x[..., row : row + 1, :] -= a[..., row : row + 1, solved] @ x[..., solved, :]
        if not unitriangular:
            x[..., row, :] /= a[..., row, row, None]
