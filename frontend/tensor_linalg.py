"""``torch.linalg``'s core as ``kiln.linalg`` functions and ``Tensor`` methods, over the ``linalg`` dialect.

- ``inv``, ``solve`` (``left=False`` too; a vector right-hand side as PyTorch tells one), ``det``, ``slogdet``,
  ``cholesky`` (``upper=True`` too), ``solve_triangular`` (``upper``, ``left``, ``unitriangular``): one IR op each
  (``compiler/ops/linalg.py``), a right-sided solve as a transposed left one; batched over leading dims (symbolic
  ones too), the matrix size static.
- ``vector_norm``, ``matrix_norm`` (``'fro'``, 1, -1, inf, -inf; ``'nuc'``, 2 and -2 from the singular values,
  ``frontend/linalg_spectral.py``) and ``norm``: reductions over existing ops (``F.norm``).
- ``Tensor.inverse``, ``det``, ``logdet`` (NaN for a negative determinant, as PyTorch), ``slogdet``, ``cholesky``.

Gradients are the ops' VJPs (``compiler/autodiff/rules_linalg.py``): ``det``'s goes through ``inv``, so it follows
PyTorch only away from singular matrices; ``cholesky``'s is PyTorch's symmetric one.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from kiln.frontend.linalg_factor import FactorMethods
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts
from kiln.frontend.warn_once import CHOLESKY_DEPRECATED, warn_once


def _apply(*args: Any, **attrs: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply(*args, **attrs)


class SlogdetResult(NamedTuple):
    """``torch.linalg.slogdet``'s pair: ``sign`` (0 for a singular matrix) and ``logabsdet`` (-inf for one)."""

    sign: Any
    logabsdet: Any


@autocasts("linalg_inv")
def inv(A: Any) -> Any:
    """``A^-1`` of every ``(n, n)`` matrix in ``A``; a singular one raises ``kiln.linalg.LinAlgError`` when run."""
    return _apply("linalg.inv", A)


def _is_vector(A: Any, B: Any) -> bool:
    """PyTorch's rule: ``B`` is a (batch of) vector(s) when 1-D or of ``A``'s shape without its last dim."""
    return B.ndim == 1 or (B.ndim == A.ndim - 1 and tuple(B.shape) == tuple(A.shape[:-1]))


@autocasts("linalg_solve")
def solve(A: Any, B: Any, *, left: bool = True) -> Any:
    """``X`` with ``A X = B`` (``left=False``: ``X A = B``, solved as ``A^T X^T = B^T``); batch dims broadcast."""
    if _is_vector(A, B):
        return _apply("linalg.solve", A if left else A.mT, B.unsqueeze(-1)).squeeze(-1)
    return _apply("linalg.solve", A, B) if left else _apply("linalg.solve", A.mT, B.mT).mT


def det(A: Any) -> Any:
    """``det A`` of every matrix (LU: exact zeros for exactly singular matrices)."""
    return _apply("linalg.det", A)


def slogdet(A: Any) -> SlogdetResult:
    """``(sign, log|det A|)``: ``log|det|`` stays finite where ``det`` over- or underflows."""
    return SlogdetResult(_apply("linalg.det_sign", A), _apply("linalg.logabsdet", A))


def logdet(A: Any) -> Any:
    """``log det A``: NaN where the determinant is negative, -inf where it is 0 (as PyTorch)."""
    sign, logabsdet = slogdet(A)
    return _apply("tensor.where", _apply("tensor.less", sign, 0.0), math.nan, logabsdet)


@autocasts("linalg_cholesky")
def cholesky(A: Any, *, upper: bool = False) -> Any:
    """``L`` lower with ``A = L L^T`` (``upper``: ``U = L^T``); ``A`` symmetric positive definite. As PyTorch's, only
    one triangle is read (the lower; ``upper``: the upper), so a non-symmetric ``A`` factors the symmetric matrix that
    triangle stands for; the gradient is the symmetric one, as PyTorch's (the op's own)."""
    triangle = (A.mT if upper else A).tril()
    read = triangle + triangle.tril(-1).mT
    finite = _apply("tensor.where", (A != A) | (A.abs() == math.inf), 0.0, A)
    lower = _apply("linalg.cholesky", read.detach() + (finite - finite.detach()))
    return lower.mT if upper else lower


def solve_triangular(A: Any, B: Any, *, upper: bool, left: bool = True, unitriangular: bool = False) -> Any:
    """``X`` with ``T X = B`` (``left=False``: ``X T = B``), ``T`` the upper or lower triangle of ``A`` (the other
    entries are not read), its diagonal read as ones with ``unitriangular``."""
    if left:
        return _apply("linalg.solve_triangular", A, B, upper=upper, unitriangular=unitriangular)
    # X T = B  <=>  T^T X^T = B^T, and T^T is the other triangle
    return _apply("linalg.solve_triangular", A.mT, B.mT, upper=not upper, unitriangular=unitriangular).mT


def vector_norm(x: Any, ord: float = 2, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
    """The ``ord``-norm of ``x`` flattened (or over ``dim``): 2, 1, inf, -inf, 0 and any other number."""
    from kiln.frontend.functional import norm

    if isinstance(ord, str):
        raise located_error(f"linalg.vector_norm: ord must be a number, got {ord!r} (matrix norms: linalg.matrix_norm)")
    return norm(x, ord, dim, keepdim, dtype)


def matrix_norm(A: Any, ord: Any = "fro", dim: tuple[int, int] = (-2, -1), keepdim: bool = False, *, dtype: Any = None) -> Any:
    """``'fro'``; 1 / -1: the largest / smallest column sum of ``|A|``; inf / -inf: the same over rows; ``'nuc'``, 2 / -2:
    the sum, the largest / smallest of the singular values (``linalg_spectral.singular_value_norm``)."""
    if dtype is not None:
        A = A.to(dtype)
    if A.ndim < 2 or len(dim) != 2:
        raise located_error(f"linalg.matrix_norm needs a matrix (rank >= 2) and two dims, got {A.type} and dim={dim}")
    rows, columns = (d % A.ndim for d in dim)
    if ord == "fro":
        return vector_norm(A, 2, (rows, columns), keepdim)
    if ord in ("nuc", 2, -2):
        from kiln.frontend.linalg_spectral import singular_value_norm

        return singular_value_norm(A, ord, rows, columns, keepdim)
    if ord not in (1, -1, math.inf, -math.inf):
        raise located_error(f"linalg.matrix_norm: ord must be 'fro', 'nuc', 2, -2, 1, -1, inf or -inf, got {ord!r}")
    summed, extreme = (rows, columns) if abs(ord) == 1 else (columns, rows)  # 1: sum down each column, then the extreme
    sums = A.abs().sum(summed, keepdim=True)
    result = sums.amax(extreme, keepdim=True) if ord > 0 else sums.amin(extreme, keepdim=True)
    return result if keepdim else result.squeeze((rows, columns))


def norm(A: Any, ord: Any = None, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
    """``matrix_norm`` for a string ``ord``, two dims, or a 2-D ``A`` with an ``ord`` and no ``dim``; else ``vector_norm``
    (``ord=None``: the 2-norm, of every element when ``dim`` is ``None``)."""
    two_dims = isinstance(dim, (tuple, list)) and len(dim) == 2
    if isinstance(ord, str) or two_dims or (dim is None and ord is not None and A.ndim == 2):
        return matrix_norm(A, "fro" if ord is None else ord, tuple(dim) if two_dims else (-2, -1), keepdim, dtype=dtype)
    if dim is None and ord is not None and A.ndim != 1:
        raise located_error(f"linalg.norm: with ord={ord!r} and no dim, A must be 1-D or 2-D, got {A.type}")
    return vector_norm(A, 2 if ord is None else ord, dim, keepdim, dtype=dtype)


class LinalgMethods(FactorMethods):
    """``Tensor``'s linear-algebra methods (PyTorch's names)."""

    @autocasts("inverse")
    def inverse(self) -> Any:
        return inv(self)

    def det(self) -> Any:
        return det(self)

    def logdet(self) -> Any:
        return logdet(self)

    def slogdet(self) -> SlogdetResult:
        return slogdet(self)

    @autocasts("cholesky")
    def cholesky(self, upper: bool = False) -> Any:
        warn_once(CHOLESKY_DEPRECATED)
        return cholesky(self, upper=upper)

    @autocasts("svd")
    def svd(self, some: bool = True, compute_uv: bool = True) -> Any:
        """``torch.svd``'s legacy form: ``(U, S, V)``, ``V`` not ``Vh`` (``kiln.linalg.svd`` gives ``Vh``)."""
        from kiln.frontend.linalg_spectral import svd_legacy

        return svd_legacy(self, some, compute_uv)

    @autocasts("pinverse")
    def pinverse(self, rcond: float = 1e-15) -> Any:
        from kiln.frontend.linalg_spectral import pinverse

        return pinverse(self, rcond)
