"""The ``linalg`` dialect's spectral ops: the symmetric eigendecomposition and the SVD, batched over leading dims.

```
%w, %v = "linalg.eigh"(%a) {UPLO = "L"} : (tensor<Nx3x3xf64>) -> (tensor<Nx3xf64>, tensor<Nx3x3xf64>)
%u, %s, %vh = "linalg.svd"(%a) {full_matrices = false} : (tensor<Nx4x3xf64>) -> (tensor<Nx4x3xf64>, tensor<Nx3xf64>, tensor<Nx3x3xf64>)
```

``eigh`` reads one triangle (``UPLO``: ``"L"`` lower, ``"U"`` upper) of a float ``(..., n, n)`` matrix as a symmetric
one, ``A = V diag(w) V^T``: its results are the eigenvalues ``w`` ``(..., n)`` in ascending order and the orthonormal
eigenvectors, the columns of ``V`` ``(..., n, n)``. ``svd`` factors a float ``(..., m, n)`` matrix ``A = U diag(S) Vh``
with ``k = min(m, n)`` singular values ``S`` ``(..., k)`` in descending order; ``U`` is ``(..., m, k)`` and ``Vh``
``(..., k, n)``, or ``(..., m, m)`` and ``(..., n, n)`` with ``full_matrices``. As in ``compiler/ops/linalg.py`` the
matrix dims are static (the VJPs build ``n x n`` identities) and the leading ones may be symbolic. A vector's sign (an
eigenvector, a singular pair ``u, v``) is LAPACK's choice. The VJPs are in
``compiler/autodiff/rules_linalg_spectral.py``.
"""

from __future__ import annotations

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType
from kiln.compiler.ops.linalg import _square
from kiln.compiler.ops.linalg_factor import _matrix
from kiln.compiler.ops.registry import register_op

TRIANGLES = ("L", "U")
"""``UPLO``'s values, as LAPACK's and PyTorch's: the triangle read."""


@register_op("linalg.eigh", UPLO="L")
def eigh_shape(a: TensorType, *, UPLO: str) -> tuple[TensorType, TensorType]:
    """``(w, V)``: ``(..., n)`` eigenvalues, ascending, and ``(..., n, n)`` eigenvectors (columns)."""
    if UPLO not in TRIANGLES:
        raise ShapeError(f"linalg.eigh: UPLO must be 'L' (read the lower triangle) or 'U' (the upper), got {UPLO!r}")
    _square("linalg.eigh", a)
    return a.with_shape(a.shape[:-1]), a


@register_op("linalg.svd", full_matrices=False)
def svd_shape(a: TensorType, *, full_matrices: bool) -> tuple[TensorType, TensorType, TensorType]:
    """``(U, S, Vh)``: ``(..., m, k)``, ``(..., k)``, ``(..., k, n)`` with ``k = min(m, n)``; ``U`` ``(..., m, m)`` and
    ``Vh`` ``(..., n, n)`` with ``full_matrices``."""
    m, n = _matrix("linalg.svd", a)
    k = min(m, n)
    batch = a.shape[:-2]
    left, right = (m, n) if full_matrices else (k, k)
    return a.with_shape(batch + (m, left)), a.with_shape(batch + (k,)), a.with_shape(batch + (right, n))
