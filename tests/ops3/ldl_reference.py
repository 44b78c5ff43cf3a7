"""LDL^T references shared by the op rows (``op_rows_linalg_ldl.py``) and ``test_linalg_ldl.py``: symmetric
indefinite inputs, and ``A`` rebuilt from LAPACK's ``(LD, pivots)`` by its definition."""

from __future__ import annotations

import numpy as np


def symmetric_indefinite(rng, n: int, batch: tuple[int, ...] = ()) -> np.ndarray:
    """``Q diag(s) Q^T``, ``Q`` a random rotation, ``|s|`` in [1, 2] of both signs (exactly symmetric)."""
    q, _ = np.linalg.qr(rng.standard_normal(batch + (n, n)))
    s = rng.uniform(1.0, 2.0, batch + (n,)) * rng.choice([-1.0, 1.0], batch + (n,))
    a = (q * s[..., None, :]) @ np.swapaxes(q, -1, -2)
    return (a + np.swapaxes(a, -1, -2)) / 2


def rebuilt(ld: np.ndarray, pivots: np.ndarray) -> np.ndarray:
    """``A = L D L^T`` with ``L = P(1) L(1) P(2) L(2) ...``: ``P(k)`` swaps row ``k`` (``k + 1`` for a 2x2 block)
    with ``|p[k]| - 1``, ``L(k)`` is the identity with ``LD``'s entries below block ``k`` in its columns."""
    n = ld.shape[0]
    lower, d, k = np.eye(n), np.zeros((n, n)), 0
    while k < n:
        size = 1 if pivots[k] > 0 else 2
        swap = np.eye(n)
        swap[[k + size - 1, abs(pivots[k]) - 1]] = swap[[abs(pivots[k]) - 1, k + size - 1]]
        step = np.eye(n)
        step[k + size :, k : k + size] = ld[k + size :, k : k + size]
        d[k : k + size, k : k + size] = np.tril(ld[k : k + size, k : k + size]) + np.tril(ld[k : k + size, k : k + size], -1).T
        lower = lower @ swap @ step
        k += size
    return lower @ d @ lower.T
