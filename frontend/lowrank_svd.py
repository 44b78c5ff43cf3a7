"""``torch.svd_lowrank`` and ``torch.pca_lowrank``: Halko, Martinsson and Tropp's randomized SVD (Algorithm 5.1 with
Algorithm 4.4's power iterations) over ``kiln.linalg.qr`` and ``svd``, differentiable and traceable.

```python
U, S, V = kiln.svd_lowrank(A, q=6, niter=2)      # A ~ U diag(S) V^T, the q largest singular triplets
U, S, V = kiln.pca_lowrank(X, q=3)               # of X centred by its column means: principal directions in V
```

```
Q = orth(A R)                  R: n x q standard normal (kiln's draws: the step's seed in a trace)
Q = orth(A orth(A^T Q))        niter times (power iterations sharpen the spectrum's decay)
U_B, S, V^T = svd(Q^T A)       a q x n problem;  U = Q U_B
```

A wide ``A`` (m < n) is handled through its transpose, as torch's. The draws are kiln's, so the results match
torch's where they are unique: exactly for a matrix of rank at most ``q`` (up to the signs of the singular vectors),
and to the algorithm's accuracy otherwise.
"""

from __future__ import annotations

from typing import Any

from kiln.frontend.tensor import Tensor


def svd_lowrank(A: Tensor, q: int | None = 6, niter: int | None = 2, M: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, S, V)`` with ``A - M ~ U diag(S) V^T`` (``M`` broadcast to ``A``; None is zero)."""
    q, niter = 6 if q is None else q, 2 if niter is None else niter
    A = A if M is None else A - M
    rows, columns = A.shape[-2], A.shape[-1]
    if not 0 < q <= min(rows, columns):
        raise ValueError(f"svd_lowrank: q={q} must be positive and at most min(m, n) = {min(rows, columns)} for a "
                         f"{rows} x {columns} matrix")
    if rows < columns:
        U, S, V = _randomized_svd(A.mT, q, niter)
        return V, S, U
    return _randomized_svd(A, q, niter)


def pca_lowrank(A: Tensor, q: int | None = None, center: bool = True, niter: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """``svd_lowrank`` of ``A`` minus its column means (``center``); ``q`` defaults to ``min(6, m, n)``."""
    rows, columns = A.shape[-2], A.shape[-1]
    q = min(6, rows, columns) if q is None else q
    return svd_lowrank(A, q, niter, A.mean(-2, keepdim=True) if center else None)


def _randomized_svd(A: Tensor, q: int, niter: int) -> tuple[Tensor, Tensor, Tensor]:
    from kiln.frontend.linalg_spectral import svd  # lazily: linalg builds on the Tensor

    Q = _approximate_basis(A, q, niter)
    U, S, Vh = svd(Q.mT @ A, full_matrices=False)
    return Q @ U, S, Vh.mT


def _approximate_basis(A: Tensor, q: int, niter: int) -> Tensor:
    """An orthonormal ``m x q`` basis whose span approximates ``A``'s leading column space."""
    from kiln.frontend.torch_functions import randn

    Q = _orthonormal(A @ randn(A.shape[-1], q, dtype=A.dtype))
    for _ in range(niter):
        Q = _orthonormal(A @ _orthonormal(A.mT @ Q))
    return Q


def _orthonormal(x: Tensor) -> Any:
    from kiln.frontend.linalg_factor import qr

    return qr(x)[0]


__all__ = ["pca_lowrank", "svd_lowrank"]
