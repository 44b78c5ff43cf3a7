"""The ``linalg`` dialect's factorizations: QR, LU and the matrix exponential, batched over leading dims.

```
%q = "linalg.qr_q"(%a) {mode = "reduced"} : (tensor<Nx5x3xf64>) -> tensor<Nx5x3xf64>
%r = "linalg.qr_r"(%a) {mode = "reduced"} : (tensor<Nx5x3xf64>) -> tensor<Nx3x3xf64>
%lu = "linalg.lu_factor"(%a) : (tensor<Nx4x4xf64>) -> tensor<Nx4x4xf64>
%p = "linalg.lu_pivots"(%a) : (tensor<Nx4x4xf64>) -> tensor<Nx4xi32>
%s = "linalg.pivots_to_permutation"(%p) {size = 4} : (tensor<Nx4xi32>) -> tensor<Nx4xi64>
%e = "linalg.matrix_exp"(%a) : (tensor<Nx4x4xf64>) -> tensor<Nx4x4xf64>
%i = "linalg.cholesky_info"(%a) : (tensor<Nx4x4xf64>) -> tensor<Nxi32>
%y = "linalg.checked"(%x, %i) {function = "linalg.cholesky", failure = "..."} : (...) -> tensor<Nx4x4xf64>
```

Every op has one result, as the rest of the dialect (``slogdet`` is two ops): a QR is ``qr_q`` and ``qr_r`` (two
LAPACK calls, as ``det_sign`` and ``logabsdet``; CSE merges the extra factorization the VJPs emit), an LU is
``lu_factor`` (``L`` below the diagonal, its unit diagonal not stored, ``U`` on and above it, LAPACK's packed form)
and ``lu_pivots`` (LAPACK's 1-based row interchanges, int32, as PyTorch's). ``pivots_to_permutation`` turns
pivots into the row order ``perm`` with ``A[perm] = L U``, so ``P[i, j] = (perm[j] == i)`` in ``A = P L U``.
``mode`` is ``torch.linalg.qr``'s: ``"reduced"`` (``Q`` is ``(m, k)``, ``R`` ``(k, n)``, ``k = min(m, n)``),
``"complete"`` (``Q`` ``(m, m)``, ``R`` ``(m, n)``) or ``"r"`` (``R`` only, as reduced; no gradient, as PyTorch).
``cholesky_info`` is LAPACK's ``info`` of a Cholesky (0, or the order of the first leading minor that is not
positive definite) and ``checked`` passes ``x`` through, raising ``kiln.linalg.LinAlgError`` when run if any
``info`` is nonzero: the ``check_errors`` of ``lu_factor``, ``cholesky_ex``, ``inv_ex`` and ``solve_ex``.
The VJPs are in ``compiler/autodiff/rules_linalg_factor.py``, the kernels in
``backends/numpy/lowering_linalg_factor.py``.
"""

from __future__ import annotations

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.linalg import _square
from kiln.compiler.ops.registry import register_op

QR_MODES = ("reduced", "complete", "r")


def _matrix(op: str, a: TensorType) -> tuple[int, int]:
    """``(m, n)`` of a float ``(..., m, n)`` operand with static ``m`` and ``n``; a ShapeError saying what to do."""
    if not a.dtype.is_float:
        raise ShapeError(f"{op} needs a float matrix, got {a}; cast it to float32 or float64")
    if a.rank < 2:
        raise ShapeError(f"{op} needs matrices (..., m, n), got {a}")
    m, n = a.shape[-2:]
    if not (isinstance(m, int) and isinstance(n, int)):
        raise ShapeError(f"{op} needs a static matrix size (m, n), got {a}; only the leading (batch) dims may be symbolic")
    return m, n


def _qr_mode(op: str, mode: str) -> None:
    if mode not in QR_MODES:
        raise ShapeError(f"{op}: mode must be one of {', '.join(map(repr, QR_MODES))}, got {mode!r}")


@register_op("linalg.qr_q", mode="reduced")
def qr_q_shape(a: TensorType, *, mode: str) -> TensorType:
    """``Q`` of ``A = Q R``: ``(..., m, min(m, n))``, ``(..., m, m)`` in ``"complete"`` mode."""
    _qr_mode("linalg.qr_q", mode)
    if mode == "r":
        raise ShapeError("linalg.qr_q: mode 'r' computes no Q; use 'reduced' or 'complete'")
    m, n = _matrix("linalg.qr_q", a)
    return a.with_shape(a.shape[:-1] + (m if mode == "complete" else min(m, n),))


@register_op("linalg.qr_r", mode="reduced")
def qr_r_shape(a: TensorType, *, mode: str) -> TensorType:
    """``R`` of ``A = Q R``, upper triangular: ``(..., min(m, n), n)``, ``(..., m, n)`` in ``"complete"`` mode."""
    _qr_mode("linalg.qr_r", mode)
    m, n = _matrix("linalg.qr_r", a)
    return a.with_shape(a.shape[:-2] + (m if mode == "complete" else min(m, n), n))


@register_op("linalg.lu_factor")
def lu_factor_shape(a: TensorType) -> TensorType:
    """``L`` and ``U`` of ``A = P L U`` packed in one ``(..., m, n)`` matrix (partial pivoting, as LAPACK's getrf)."""
    _matrix("linalg.lu_factor", a)
    return a


@register_op("linalg.lu_pivots", traits={"non_differentiable"})
def lu_pivots_shape(a: TensorType) -> TensorType:
    """The row interchanges of ``lu_factor``: ``(..., min(m, n))`` int32, 1-based (row ``i`` swapped with ``p[i]``)."""
    m, n = _matrix("linalg.lu_pivots", a)
    return TensorType(a.shape[:-2] + (min(m, n),), DType.i32)


@register_op("linalg.pivots_to_permutation", traits={"non_differentiable"}, size=0)
def pivots_to_permutation_shape(pivots: TensorType, *, size: int) -> TensorType:
    """``perm`` (int64, ``(..., size)``) after swapping row ``i`` with ``pivots[i] - 1`` for each ``i`` in turn."""
    if pivots.dtype not in (DType.i32, DType.i64) or pivots.rank < 1:
        raise ShapeError(f"linalg.pivots_to_permutation needs integer pivots (..., k), got {pivots}")
    if not isinstance(pivots.shape[-1], int) or pivots.shape[-1] > size:
        raise ShapeError(f"linalg.pivots_to_permutation: {pivots} has more pivots than the {size} rows (attribute size)")
    return TensorType(pivots.shape[:-1] + (size,), DType.i64)


@register_op("linalg.matrix_exp")
def matrix_exp_shape(a: TensorType) -> TensorType:
    """``exp(A) = sum_k A^k / k!``, same type as ``A``."""
    _square("linalg.matrix_exp", a)
    return a


@register_op("linalg.cholesky_info", traits={"non_differentiable"})
def cholesky_info_shape(a: TensorType) -> TensorType:
    """LAPACK's ``info`` of the Cholesky of ``(A + A^T) / 2``: one int32 per matrix, ``(...)``."""
    _square("linalg.cholesky_info", a)
    return TensorType(a.shape[:-2], DType.i32)


@register_op("linalg.checked", function="", failure="")
def checked_shape(x: TensorType, info: TensorType, *, function: str, failure: str) -> TensorType:
    """``x``, once every ``info`` is 0; else ``function``'s ``failure`` (``{info}`` filled in) raised when run."""
    if info.dtype is not DType.i32:
        raise ShapeError(f"linalg.checked needs int32 info, got {info}")
    return x
