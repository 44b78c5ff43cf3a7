"""``torch.linalg``'s spectral functions as ``kiln.linalg`` functions, over ``linalg.eigh`` and ``linalg.svd``.

```python
import kiln
w, V = kiln.linalg.eigh(A)                          # A symmetric (..., n, n): w ascending, A = V diag(w) V^T
U, S, Vh = kiln.linalg.svd(A, full_matrices=False)  # A (..., m, n) = U diag(S) Vh
X = kiln.linalg.lstsq(A, B).solution                # min ||A X - B||, through the pseudo-inverse
r = kiln.linalg.matrix_rank(A)                      # int64, no gradient
```

- ``eigh``, ``eigvalsh`` (``UPLO``), ``svd`` (``full_matrices``), ``svdvals``: one IR op each
  (``compiler/ops/linalg_spectral.py``), results as PyTorch's named tuples.
- ``pinv`` (``atol``, ``rtol``, ``hermitian``), ``matrix_rank`` (the same tolerances), ``cond`` (``p`` None, 2, -2
  from singular values; ``'fro'``, ``'nuc'``, inf, -inf, 1, -1 as ``norm(A) norm(A^-1)``) and ``lstsq`` as PyTorch
  composes them; the singular-value matrix norms (``'nuc'``, 2, -2) of ``tensor_linalg.matrix_norm``.
- The legacy forms: ``svd_legacy`` (``torch.svd`` and ``Tensor.svd``: ``some``, ``compute_uv``, returning ``V``),
  ``pinverse`` (``rcond``) and ``nuclear_norm``, exported as ``kiln.svd``, ``kiln.pinverse``, ``kiln.nuclear_norm``.

Gradients are the ops' VJPs (``compiler/autodiff/rules_linalg_spectral.py``), PyTorch's: they need distinct
eigen/singular values wherever a vector's gradient is used. Where ``pinv``'s tolerance cuts a singular value, its
gradient is the exact derivative of the truncated pseudo-inverse (PyTorch's constant-rank formula differs there); a
rank-deficient matrix's exactly repeated zero singular values get PyTorch's finite gradient. ``lstsq`` computes every driver's answer from one SVD: for
a full-rank ``A`` all of LAPACK's drivers agree on the solution (the minimum-norm one when ``m < n``); which of
``residuals``, ``rank`` and ``singular_values`` are filled (the rest empty) follows the driver, as PyTorch on the CPU.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.linalg_factor import _where_fine, lu_info
from kiln.frontend.tensor_linalg import _apply, inv, matrix_norm
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts

LSTSQ_DRIVERS = (None, "gels", "gelsy", "gelsd", "gelss")
"""``torch.linalg.lstsq``'s CPU drivers; ``None`` is PyTorch's CPU default, ``'gelsy'``."""
SPECTRAL_FORWARDED = ("svd", "pinverse")
"""``torch.svd(input, ...)`` and ``torch.pinverse(input, ...)``: the ``Tensor`` methods, exported as ``kiln.svd`` and
``kiln.pinverse`` (``torch_functions.FORWARDERS``)."""
CONDITION_NORMS = ("fro", "nuc", math.inf, -math.inf, 1, -1)
"""``cond``'s ``p`` values computed as ``norm(A) norm(A^-1)`` (square ``A`` only)."""


class EighResult(NamedTuple):
    """``torch.linalg.eigh``'s pair: ``eigenvalues`` ascending, ``eigenvectors`` as columns."""

    eigenvalues: Any
    eigenvectors: Any


class SVDResult(NamedTuple):
    """``torch.linalg.svd``'s triple, ``A = U diag(S) Vh``."""

    U: Any
    S: Any
    Vh: Any


class LegacySVDResult(NamedTuple):
    """``torch.svd``'s triple, ``A = U diag(S) V^T``: ``V``, not ``Vh``."""

    U: Any
    S: Any
    V: Any


class LstsqResult(NamedTuple):
    """``torch.linalg.lstsq``'s four: ``solution``, and per driver ``residuals``, ``rank``, ``singular_values``."""

    solution: Any
    residuals: Any
    rank: Any
    singular_values: Any


@autocasts("linalg_eigh")
def eigh(A: Any, UPLO: str = "L") -> EighResult:
    """Eigenvalues (ascending) and eigenvectors of every symmetric matrix in ``A``, reading its ``UPLO`` triangle."""
    return EighResult(*_apply("linalg.eigh", A, UPLO=UPLO))


@autocasts("linalg_eigvalsh")
def eigvalsh(A: Any, UPLO: str = "L") -> Any:
    """The eigenvalues of ``eigh``, ascending."""
    return eigh(A, UPLO).eigenvalues


@autocasts("linalg_svd")
def svd(A: Any, full_matrices: bool = True, *, driver: str | None = None) -> SVDResult:
    """``A = U diag(S) Vh``, ``S`` descending; ``full_matrices=False`` gives the reduced ``U`` and ``Vh``."""
    if driver is not None:
        raise located_error(f"linalg.svd: driver={driver!r} picks a cuSOLVER algorithm (CUDA only in PyTorch); kiln's "
                            "backends choose their own: leave driver out")
    return SVDResult(*_apply("linalg.svd", A, full_matrices=bool(full_matrices)))


@autocasts("linalg_svdvals")
def svdvals(A: Any, *, driver: str | None = None) -> Any:
    """The singular values of every matrix in ``A``, descending."""
    return svd(A, full_matrices=False, driver=driver).S


def svd_legacy(A: Any, some: bool = True, compute_uv: bool = True) -> LegacySVDResult:
    """``torch.svd``: ``(U, S, V)`` with ``V = Vh^T``, reduced when ``some``; without ``compute_uv``, ``U`` and ``V`` are
    zeros of the full sizes ``(m, m)`` and ``(n, n)``, as PyTorch's."""
    U, S, Vh = svd(A, full_matrices=not some)
    if compute_uv:
        return LegacySVDResult(U, S, Vh.mT)
    m, n = A.shape[-2:]
    return LegacySVDResult(A.new_zeros(*A.shape[:-1], m), S, A.new_zeros(*A.shape[:-2], n, n))


def _per_matrix(tolerance: Any) -> Any:
    """A tolerance, a number or one per matrix ``(...)``, as ``(..., 1)`` against a matrix's values."""
    return tolerance.unsqueeze(-1) if hasattr(tolerance, "unsqueeze") else tolerance


def _threshold(A: Any, largest: Any, atol: Any, rtol: Any) -> Any:
    """PyTorch's cut ``max(atol, rtol * largest)``: without ``rtol``, ``eps * max(m, n)``, or 0 where ``atol > 0``."""
    default = float(ml_dtypes.finfo(A.dtype.numpy).eps) * max(A.shape[-2:])
    if rtol is None:
        rtol = default if atol is None else _where_atol_positive(atol, default)
    relative = _per_matrix(rtol) * largest
    return relative if atol is None else _apply("tensor.maximum", relative, _per_matrix(atol))


def _where_atol_positive(atol: Any, default: float) -> Any:
    """``0`` where ``atol > 0``, else ``default`` (``atol`` a number or a tensor)."""
    if hasattr(atol, "unsqueeze"):
        return (atol <= 0).to(atol.dtype) * default
    return 0.0 if atol > 0 else default


def _kept_reciprocal(values: Any, kept: Any) -> Any:
    """``1 / values`` where ``kept``, else 0 (the reciprocal sees 1 elsewhere, so no inf meets the zero cotangent)."""
    return _apply("tensor.where", kept, 1.0 / _apply("tensor.where", kept, values, 1.0), 0.0)


def _svd_pseudo_inverse(A: Any, atol: Any, rtol: Any) -> tuple[Any, Any, Any]:
    """``(A^+, S, kept)``: ``V diag(1/S) U^T`` over the singular values above the threshold (``kept``)."""
    U, S, Vh = svd(A, full_matrices=False)
    kept = S > _threshold(A, S[..., :1], atol, rtol)
    return (Vh.mT * _kept_reciprocal(S, kept).unsqueeze(-2)) @ U.mT, S, kept


def _symmetric_pseudo_inverse(A: Any, atol: Any, rtol: Any) -> Any:
    """``V diag(1/w) V^T`` over the eigenvalues ``w`` with ``|w|`` above the threshold."""
    w, V = eigh(A)
    kept = w.abs() > _threshold(A, w.abs().amax(-1, keepdim=True), atol, rtol)
    return (V * _kept_reciprocal(w, kept).unsqueeze(-2)) @ V.mT


def pinv(A: Any, rcond: Any = None, hermitian: bool = False, *, atol: Any = None, rtol: Any = None) -> Any:
    """The Moore-Penrose pseudo-inverse, singular values at or below ``max(atol, rtol * s_max)`` taken as zero
    (``hermitian``: from ``eigh`` of ``A``'s lower triangle, ``|eigenvalues|`` as the singular values). PyTorch's
    older form ``pinv(A, rcond, hermitian)`` is ``rtol=rcond``."""
    if rcond is not None:
        _one_of("pinv", "rcond", rtol, "rtol")
        rtol = rcond
    if hermitian:
        return _symmetric_pseudo_inverse(A, atol, rtol)
    return _svd_pseudo_inverse(A, atol, rtol)[0]


def _one_of(function: str, old: str, new: Any, new_name: str) -> None:
    """PyTorch's two overloads: the older tolerance ``old`` or the newer ``new_name``, not both."""
    if new is not None:
        raise located_error(f"linalg.{function}: {old}= is the older form of {new_name}=; give one of them")


def pinverse(A: Any, rcond: float = 1e-15) -> Any:
    """``torch.pinverse``: ``pinv`` with ``rtol=rcond``."""
    return pinv(A, rtol=rcond)


@autocasts("linalg_matrix_rank")
def matrix_rank(A: Any, tol: Any = None, hermitian: bool = False, *, atol: Any = None, rtol: Any = None) -> Any:
    """The number of singular values (``hermitian``: ``|eigenvalues|``) above ``max(atol, rtol * s_max)``, int64.
    PyTorch's older form ``matrix_rank(A, tol, hermitian)`` is ``atol=tol, rtol=0``."""
    if tol is not None:
        _one_of("matrix_rank", "tol", atol if atol is not None else rtol, "atol/rtol")
        atol, rtol = tol, 0.0
    values = eigvalsh(A).abs() if hermitian else svdvals(A)
    largest = values.amax(-1, keepdim=True)
    return (values > _threshold(A, largest, atol, rtol)).to(DType.i64).sum(-1)


def singular_value_norm(A: Any, ord: Any, rows: int, columns: int, keepdim: bool) -> Any:
    """``matrix_norm`` for ``'nuc'`` (the sum of the singular values), 2 (the largest) and -2 (the smallest) over the
    dims ``rows`` and ``columns`` (non-negative) of ``A``."""
    trailing = (rows, columns) == (A.ndim - 2, A.ndim - 1)  # no transpose, so one SVD serves pinv, cond... too (CSE)
    values = svdvals(A if trailing else A.movedim((rows, columns), (-2, -1)))
    result = values.sum(-1) if ord == "nuc" else values.amax(-1) if ord == 2 else values.amin(-1)
    return result.unsqueeze(min(rows, columns)).unsqueeze(max(rows, columns)) if keepdim else result


def nuclear_norm(A: Any, dim: Any = None, keepdim: bool = False) -> Any:
    """``torch.nuclear_norm``: ``matrix_norm(A, 'nuc')`` over ``dim`` (the last two dims by default)."""
    return matrix_norm(A, "nuc", (-2, -1) if dim is None else tuple(dim), keepdim)


@autocasts("linalg_cond")
def cond(A: Any, p: Any = None) -> Any:
    """The condition number in norm ``p``: ``s_max / s_min`` for None and 2 (-2: ``s_min / s_max``) of any ``(m, n)``;
    ``norm(A, p) norm(A^-1, p)`` for ``'fro'``, ``'nuc'``, inf, -inf, 1, -1 of square matrices, inf for a matrix the
    LU finds singular (``inv_ex``'s ``info``), as PyTorch (which gives NaN for ``'nuc'`` of a zero matrix)."""
    if p is None or (not isinstance(p, str) and abs(p) == 2):
        values = svdvals(A)
        largest, smallest = values[..., 0], values[..., -1]
        return smallest / largest if p == -2 else largest / smallest
    if p not in CONDITION_NORMS:
        raise located_error(f"linalg.cond: p must be None, 2, -2, 'fro', 'nuc', inf, -inf, 1 or -1, got {p!r}")
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise located_error(f"linalg.cond: p={p!r} needs square matrices (..., n, n), got {A.type}; p=None, 2 or -2 "
                            "take any (..., m, n)")
    info = lu_info(_apply("linalg.lu_factor", A))  # inv_ex's, without its NaN inverse (an SVD refuses NaN for 'nuc')
    inverse = inv(_where_fine(info, A))
    return _apply("tensor.where", info != 0, math.inf, matrix_norm(A, p) * matrix_norm(inverse, p))


@autocasts("linalg_lstsq")
def lstsq(A: Any, B: Any, rcond: float | None = None, *, driver: str | None = None) -> LstsqResult:
    """``X`` minimizing ``||A X - B||`` (``B`` ``(..., m, k)``, or ``(..., m)`` with one dim less than ``A``; batch dims
    broadcast) as ``pinv(A, rtol=rcond) B``; ``rcond`` defaults to ``eps * max(m, n)``."""
    if driver not in LSTSQ_DRIVERS:
        raise located_error(f"linalg.lstsq: driver must be one of gels, gelsy, gelsd, gelss (or None), got {driver!r}")
    if not 0 <= A.ndim - B.ndim <= 1:
        raise located_error(f"linalg.lstsq: B must have A's number of dims (matrices) or one less (vectors), got "
                            f"A {A.type} and B {B.type}")
    vector = B.ndim == A.ndim - 1
    rhs = B.unsqueeze(-1) if vector else B
    pseudo_inverse, S, kept = _svd_pseudo_inverse(A, None, rcond)
    solution = pseudo_inverse @ rhs
    return LstsqResult(solution.squeeze(-1) if vector else solution, _residuals(A, rhs, solution, driver),
                       kept.to(DType.i64).sum(-1) if driver != "gels" else _empty(A, DType.i64),
                       S.detach() if driver in ("gelsd", "gelss") else _empty(A, A.dtype))


def _residuals(A: Any, rhs: Any, solution: Any, driver: str | None) -> Any:
    """``||A X - B||^2`` per column, ``(..., k)``, where LAPACK gives it (``m > n``, not ``gelsy``); else empty. For a
    rank-deficient ``A`` PyTorch leaves it empty too, a shape known only when run: kiln gives the residuals then."""
    m, n = A.shape[-2:]
    if m <= n or driver in (None, "gelsy"):
        return _empty(A, A.dtype)
    error = A @ solution - rhs
    return (error * error).sum(-2)


def _empty(A: Any, dtype: DType) -> Any:
    """PyTorch's empty tensor for a result the driver does not compute."""
    return A.new_zeros(0, dtype=dtype)
