"""``torch.linalg``'s factorizations and the rest of its matrix functions, as ``kiln.linalg`` functions and ``Tensor``
methods (PyTorch's names, signatures and named-tuple results).

```python
import kiln
Q, R = kiln.linalg.qr(A)                          # mode "reduced", "complete" or "r"
LU, pivots = kiln.linalg.lu_factor(A)             # pivots int32, 1-based, as PyTorch's
X = kiln.linalg.lu_solve(LU, pivots, B)           # left=False, adjoint=True too
P, L, U = kiln.linalg.lu(A)
E = kiln.linalg.matrix_exp(A)
```

- One IR op each (``compiler/ops/linalg_factor.py``): ``qr`` (``qr_q`` and ``qr_r``), ``lu_factor`` (``lu_factor``
  and ``lu_pivots``), ``matrix_exp``. ``lu_factor``'s ``info`` is read off ``U``'s diagonal (LAPACK's: the first
  exact zero, 1-based), ``lu_unpack``'s ``P`` comes from ``pivots_to_permutation``; ``lu``, ``lu_solve`` (two
  ``solve_triangular``), ``cholesky_solve``, ``cholesky_inverse`` and ``householder_product`` are compositions, and
  so are ``matrix_power``, ``multi_dot``, ``vander``, ``tensorinv``, ``tensorsolve``, ``vecdot``, ``cross``,
  ``diagonal`` and ``matmul``.
- ``cholesky_ex``, ``inv_ex``, ``solve_ex`` and ``lu_factor_ex`` return ``info`` (0 where the matrix was fine),
  PyTorch's exactly, and with ``check_errors=True`` raise ``kiln.linalg.LinAlgError`` when run (``linalg.checked``).
  Where ``info > 0``, ``cholesky_ex`` returns the partial factor LAPACK stopped at and ``lu_factor_ex`` the complete
  factorization, as PyTorch's; ``inv_ex`` and ``solve_ex`` return NaN (PyTorch's are LAPACK's divisions by the zero
  pivot, inf or NaN by the order of its operations).
- ``eig``/``eigvals`` give complex tensors, eagerly and without gradients (``frontend/complex_linalg.py``); ``eigh``
  covers symmetric matrices.
- The LDL^T factorization of symmetric indefinite matrices (``ldl_factor``, ``ldl_solve``) is ``frontend/linalg_ldl.py``.
- The matrix functions (``matrix_exp``, ``matrix_power``, ``multi_dot``, ``householder_product``, ``vander``...) are
  ``frontend/linalg_matrix_functions.py``, re-exported here; the shared helpers ``frontend/linalg_common.py``.

Gradients follow PyTorch's: the ops' VJPs (``compiler/autodiff/rules_linalg_factor.py``; ``qr`` in mode ``"r"``
and ``"complete"`` with more rows than columns refuse, as PyTorch), autodiff through the compositions.
``cholesky_solve`` and ``cholesky_inverse`` read only the factor's triangle but, as PyTorch's, send the gradient to
the whole ``input2`` (the factor's other triangle is passed through ``detach``, so ``T`` equals the triangle and
``dT = dL``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from kiln.frontend import tensor_linalg as core
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts
from kiln.frontend.warn_once import TRIANGULAR_SOLVE_DEPRECATED, warn_once
from kiln.frontend.linalg_common import _apply, _eye, _square_size
from kiln.frontend.linalg_matrix_functions import householder_product, matrix_exp, matrix_power
from kiln.frontend.linalg_matrix_functions import (  # noqa: F401  (re-exported: kiln.linalg and torch_functions import them from here)
    chain_matmul, cross, diagonal, eig, eigvals, matmul, multi_dot, tensorinv, tensorsolve, vander, vecdot,
)

LU_FACTOR_FAILURE = ("U[{info},{info}] is zero (1-based), so lu_solve would divide by zero; to factor a singular matrix "
                     "call linalg.lu_factor_ex (it returns info instead of raising) or linalg.lu")
SINGULAR_FAILURE = "the matrix is singular (U[{info},{info}] of its LU is zero, 1-based); check the input matrices"
CHOLESKY_FAILURE = ("the leading minor of order {info} is not positive-definite, so the matrix has no Cholesky factor; "
                    "check the input matrices")


class QRResult(NamedTuple):
    Q: Any
    R: Any


class LUFactorResult(NamedTuple):
    LU: Any
    pivots: Any


class LUFactorExResult(NamedTuple):
    LU: Any
    pivots: Any
    info: Any


class LUResult(NamedTuple):
    """``torch.linalg.lu``'s and ``torch.lu_unpack``'s ``(P, L, U)``, ``A = P L U``."""

    P: Any
    L: Any
    U: Any


class InvExResult(NamedTuple):
    inverse: Any
    info: Any


class CholeskyExResult(NamedTuple):
    L: Any
    info: Any


class SolveExResult(NamedTuple):
    result: Any
    info: Any


class TriangularSolveResult(NamedTuple):
    solution: Any
    cloned_coefficient: Any


# QR --------------------------------------------------------------------------------------------------------------


@autocasts("linalg_qr")
def qr(A: Any, mode: str = "reduced") -> QRResult:
    """``A = Q R``, ``Q`` with orthonormal columns, ``R`` upper triangular (LAPACK's signs, as PyTorch's). ``mode``:
    ``"reduced"`` (``k = min(m, n)`` columns of ``Q``), ``"complete"`` (``Q`` square) or ``"r"`` (``Q`` empty)."""
    if mode not in ("reduced", "complete", "r"):
        raise located_error(f"linalg.qr: mode must be 'reduced', 'complete' or 'r', got {mode!r}")
    if mode == "r":
        from kiln.frontend.torch_functions import zeros

        return QRResult(zeros(0, dtype=A.dtype), _apply("linalg.qr_r", A, mode="r"))
    return QRResult(_apply("linalg.qr_q", A, mode=mode), _apply("linalg.qr_r", A, mode=mode))


# LU --------------------------------------------------------------------------------------------------------------


def _no_pivoting(function: str, pivot: bool) -> None:
    if not pivot:
        raise located_error(f"{function}: LU without pivoting is not implemented (nor is it in PyTorch on the CPU); "
                            "pass pivot=True")


def lu_info(LU: Any) -> Any:
    """LAPACK's ``info`` of a packed LU: the 1-based index of the first exact zero on ``U``'s diagonal, else 0."""
    zero = LU.diagonal(0, -2, -1) == 0
    return _apply("tensor.where", zero.any(-1), zero.int().argmax(-1) + 1, 0).int()


def _checked(x: Any, info: Any, function: str, failure: str) -> Any:
    return _apply("linalg.checked", x, info, function=function, failure=failure)


def lu_factor_ex(A: Any, *, pivot: bool = True, check_errors: bool = False) -> LUFactorExResult:
    """``(LU, pivots, info)``: ``L`` (unit diagonal, not stored) and ``U`` packed, LAPACK's 1-based int32 row swaps,
    and ``info`` (0, or the first zero of ``U``'s diagonal)."""
    _no_pivoting("linalg.lu_factor_ex", pivot)
    LU = _apply("linalg.lu_factor", A)
    info = lu_info(LU)
    if check_errors:
        LU = _checked(LU, info, "linalg.lu_factor_ex", LU_FACTOR_FAILURE)
    return LUFactorExResult(LU, _apply("linalg.lu_pivots", A), info)


def lu_factor(A: Any, *, pivot: bool = True) -> LUFactorResult:
    """``(LU, pivots)``; a matrix with a zero on ``U``'s diagonal raises ``kiln.linalg.LinAlgError`` when run."""
    _no_pivoting("linalg.lu_factor", pivot)
    LU, pivots, info = lu_factor_ex(A)
    return LUFactorResult(_checked(LU, info, "linalg.lu_factor", LU_FACTOR_FAILURE), pivots)


def permutation_matrix(pivots: Any, size: int, dtype: Any) -> Any:
    """``P`` (``(..., size, size)``) of ``A = P L U`` from LU pivots: ``P[i, j] = 1`` where row ``j`` of ``L U`` is
    row ``i`` of ``A``."""
    from kiln.frontend.torch_functions import arange

    perm = _apply("linalg.pivots_to_permutation", pivots, size=size)
    return (perm.unsqueeze(-2) == arange(size).unsqueeze(-1)).to(dtype)


def lu_unpack(LU_data: Any, LU_pivots: Any, unpack_data: bool = True, unpack_pivots: bool = True) -> LUResult:
    """``(P, L, U)`` of a packed LU (``torch.lu_unpack``); what is not unpacked is an empty tensor."""
    from kiln.frontend.torch_functions import zeros

    m, n = LU_data.shape[-2:]
    k = min(m, n)
    empty = zeros(0, dtype=LU_data.dtype)
    P = permutation_matrix(LU_pivots, m, LU_data.dtype) if unpack_pivots else empty
    if not unpack_data:
        return LUResult(P, empty, empty)
    L = LU_data.tril(-1)[..., :, :k] + _eye(m, LU_data.dtype, k)
    return LUResult(P, L, LU_data.triu()[..., :k, :])


def lu(A: Any, *, pivot: bool = True) -> LUResult:
    """``(P, L, U)`` with ``A = P L U`` (a singular ``A`` too: ``U`` then has a zero on its diagonal)."""
    _no_pivoting("linalg.lu", pivot)
    LU, pivots, _ = lu_factor_ex(A)
    return lu_unpack(LU, pivots)


def lu_solve(LU: Any, pivots: Any, B: Any, *, left: bool = True, adjoint: bool = False) -> Any:
    """``X`` with ``A X = B`` for ``A = P L U`` given by ``lu_factor`` (``adjoint``: ``A^T X = B``; ``left=False``:
    ``X A = B``, solved as ``A^T X^T = B^T``)."""
    n = _square_size("linalg.lu_solve", LU)
    if not left:
        return lu_solve(LU, pivots, B.mT, adjoint=not adjoint).mT
    P = permutation_matrix(pivots, n, LU.dtype)
    if adjoint:  # U^T L^T P^T X = B
        z = core.solve_triangular(LU.mT, B, upper=False)  # U^-T B
        return P @ core.solve_triangular(LU.mT, z, upper=True, unitriangular=True)
    y = core.solve_triangular(LU, P.mT @ B, upper=False, unitriangular=True)  # L^-1 P^T B
    return core.solve_triangular(LU, y, upper=True)


# The *_ex forms: info, NaN where it is nonzero, and check_errors --------------------------------------------------


def _where_fine(info: Any, A: Any) -> Any:
    """``A`` where ``info == 0``, the identity elsewhere (so the factorization runs), per matrix."""
    return _apply("tensor.where", (info == 0).unsqueeze(-1).unsqueeze(-1), A, _eye(A.shape[-1], A.dtype))


def _nan_where_failed(info: Any, x: Any) -> Any:
    return _apply("tensor.where", (info != 0).unsqueeze(-1).unsqueeze(-1), math.nan, x)


def _finish(function: str, result: Any, info: Any, check_errors: bool, failure: str) -> Any:
    result = _nan_where_failed(info, result)
    return _checked(result, info, function, failure) if check_errors else result


@autocasts("linalg_cholesky_ex")
def cholesky_ex(A: Any, *, upper: bool = False, check_errors: bool = False) -> CholeskyExResult:
    """``(L, info)``: ``info`` is the order of the first leading minor that is not positive definite (0: none), of
    the triangle PyTorch reads (the lower one; ``upper=True``: the upper one). Where ``info > 0``, ``L`` is what
    LAPACK's unblocked ``potf2`` stops at, as PyTorch returns it (``_partial_cholesky``; for matrices of up to 128 rows:
    past that, its blocked factorization has also updated the trailing block)."""
    n = _square_size("linalg.cholesky_ex", A)
    triangle = (A.mT if upper else A).tril()
    read = triangle + triangle.tril(-1).mT  # the symmetric matrix the triangle stands for
    info = _apply("linalg.cholesky_info", read)
    finite = _apply("tensor.where", (A != A) | (A.abs() == math.inf), 0.0, A)
    source = read.detach() + (finite - finite.detach())  # read's values, A's gradient: symmetric, as PyTorch's
    lower = core.cholesky(_where_fine(info, source))
    lower = _apply("tensor.where", (info != 0).unsqueeze(-1).unsqueeze(-1), _partial_cholesky(read, info, n), lower)
    if check_errors:
        lower = _checked(lower, info, "linalg.cholesky_ex", CHOLESKY_FAILURE)
    return CholeskyExResult(lower.mT if upper else lower, info)


def _partial_cholesky(S: Any, info: Any, n: int) -> Any:
    """LAPACK's ``potf2`` (lower, left-looking) stopped at column ``j = info - 1`` of the symmetric ``S``: columns
    before ``j`` factored, ``S[j, j] - |L[j, :j]|^2`` (not positive) at ``(j, j)``, the rest of the lower triangle as
    ``S`` has it. The factored columns are those of ``cholesky(M)`` for ``M = [[S11, S21^T], [S21, S21 S11^-1 S21^T
    + I]]`` (positive definite: its Schur complement is ``I``), one ``solve`` and one ``cholesky`` whatever ``j``. A NaN
    below the leading block stays NaN along its row, as the recurrence carries it."""
    from kiln.frontend.torch_functions import arange

    k = _apply("tensor.where", info > 0, info - 1, n).long().unsqueeze(-1).unsqueeze(-1)  # columns factored
    rows, cols = arange(n).unsqueeze(-1), arange(n)
    done_cols, leading = cols < k, (rows < k) & (cols < k)
    eye = _eye(n, S.dtype)
    below = _apply("tensor.where", (rows >= k) & done_cols, S, 0.0)  # S21 in place, zeros elsewhere
    missing = below != below
    below = _apply("tensor.where", missing, 0.0, below)
    schur = below @ core.solve(_apply("tensor.where", leading, S, eye), below.mT)  # S21 S11^-1 S21^T in the trailing block
    M = _apply("tensor.where", (rows < k) | done_cols, _apply("tensor.where", missing, 0.0, S), schur + eye)
    factored = _apply("tensor.where", done_cols, core.cholesky(M), 0.0)
    factored = _apply("tensor.where", missing.int().cumsum(-1) > 0, math.nan, factored)
    pivot = S.diagonal(0, -2, -1) - (factored * factored).sum(-1)  # row j's is LAPACK's failed pivot
    untouched = _apply("tensor.where", rows == cols, pivot.unsqueeze(-1), S).tril()
    return _apply("tensor.where", done_cols, factored, _apply("tensor.where", (rows == cols) & (rows > k), S, untouched))


@autocasts("linalg_inv_ex")
def inv_ex(A: Any, *, check_errors: bool = False) -> InvExResult:
    """``(A^-1, info)``, ``info`` the LU's (0 for an invertible matrix)."""
    info = lu_info(_apply("linalg.lu_factor", A))
    return InvExResult(_finish("linalg.inv_ex", core.inv(_where_fine(info, A)), info, check_errors, SINGULAR_FAILURE), info)


def solve_ex(A: Any, B: Any, *, left: bool = True, check_errors: bool = False) -> SolveExResult:
    """``(X, info)`` with ``A X = B`` (``left=False``: ``X A = B``), ``info`` the LU's."""
    info = lu_info(_apply("linalg.lu_factor", A))
    solved = core.solve(_where_fine(info, A), B, left=left)
    if solved.ndim == A.ndim - 1:  # a vector right-hand side: one number per row, no matrix dim to mask
        solved_info = info.unsqueeze(-1) if info.ndim else info
        masked = _apply("tensor.where", solved_info != 0, math.nan, solved)
        return SolveExResult(_checked(masked, info, "linalg.solve_ex", SINGULAR_FAILURE) if check_errors else masked, info)
    return SolveExResult(_finish("linalg.solve_ex", solved, info, check_errors, SINGULAR_FAILURE), info)


# Cholesky solves and the legacy triangular solve ---------------------------------------------------------------


def _factor_triangle(L: Any, upper: bool) -> Any:
    """The factor's triangle, with the gradient of the whole input (the other triangle enters as ``x - detach(x)``)."""
    other = L.tril(-1) if upper else L.triu(1)
    return L - other.detach()


@autocasts("cholesky_solve")
def cholesky_solve(B: Any, L: Any, upper: bool = False) -> Any:
    """``X`` with ``A X = B``, ``A = L L^T`` (``upper``: ``A = U^T U``) from its Cholesky factor (``torch.cholesky_solve``)."""
    _square_size("cholesky_solve", L)
    factor = _factor_triangle(L, upper)
    lower = (factor.mT if upper else factor).detach()  # the value is LAPACK's potrs: L^-T (L^-1 B), two substitutions
    solved = core.solve_triangular(lower.mT, core.solve_triangular(lower, B.detach(), upper=False), upper=True)
    if not (getattr(B, "requires_grad", False) or getattr(L, "requires_grad", False)):
        return solved
    # the gradient is torch's, to the whole factor: that of (L L^T)^-1 B, added as a zero (x - x is exactly 0)
    differentiated = core.solve(factor.mT @ factor if upper else factor @ factor.mT, B)
    return solved + (differentiated - differentiated.detach())


@autocasts("cholesky_inverse")
def cholesky_inverse(L: Any, upper: bool = False) -> Any:
    """``A^-1`` for ``A = L L^T`` (``upper``: ``U^T U``) from its Cholesky factor (``torch.cholesky_inverse``)."""
    n = _square_size("cholesky_inverse", L)
    return cholesky_solve(_eye(n, L.dtype).broadcast_to(L.shape), L, upper)


@autocasts("triangular_solve")
def triangular_solve(b: Any, A: Any, upper: bool = True, transpose: bool = False, unitriangular: bool = False) -> TriangularSolveResult:
    """``torch.triangular_solve``: ``(X, A.clone())`` with ``T X = b`` (``transpose``: ``T^T X = b``), ``T`` a triangle of ``A``."""
    warn_once(TRIANGULAR_SOLVE_DEPRECATED)
    T, upper = (A.mT, not upper) if transpose else (A, upper)
    return TriangularSolveResult(core.solve_triangular(T, b, upper=upper, unitriangular=unitriangular), A.clone())


class FactorMethods:
    """``Tensor``'s factorization methods (PyTorch's names; the legacy forms of ``qr``, ``lu``, ``lu_solve``,
    ``triangular_solve``)."""

    @autocasts("qr")
    def qr(self, some: bool = True) -> QRResult:
        return qr(self, "reduced" if some else "complete")

    def lu(self, pivot: bool = True, get_infos: bool = False) -> Any:
        """``torch.lu``: ``(LU, pivots)`` (raising for a singular matrix when run), or ``(LU, pivots, infos)``."""
        return lu_factor_ex(self, pivot=pivot) if get_infos else tuple(lu_factor(self, pivot=pivot))

    @autocasts("lu_solve")
    def lu_solve(self, LU_data: Any, LU_pivots: Any) -> Any:
        return lu_solve(LU_data, LU_pivots, self)

    def matrix_exp(self) -> Any:
        return matrix_exp(self)

    def matrix_power(self, n: int) -> Any:
        return matrix_power(self, n)

    def cholesky_solve(self, input2: Any, upper: bool = False) -> Any:
        return cholesky_solve(self, input2, upper)

    def cholesky_inverse(self, upper: bool = False) -> Any:
        return cholesky_inverse(self, upper)

    def triangular_solve(self, A: Any, upper: bool = True, transpose: bool = False, unitriangular: bool = False) -> TriangularSolveResult:
        return triangular_solve(self, A, upper, transpose, unitriangular)

    def orgqr(self, input2: Any) -> Any:
        return householder_product(self, input2)


FACTOR_FORWARDED = ("qr", "lu", "lu_solve", "matrix_exp", "matrix_power", "cholesky_solve", "cholesky_inverse",
                    "triangular_solve", "orgqr", "det", "logdet", "slogdet", "inverse", "cholesky")
"""``torch.xxx(input, ...)`` linear-algebra functions that are ``input.xxx(...)`` here, exported as ``kiln.xxx``."""
