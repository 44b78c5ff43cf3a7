"""VJP rules of ``linalg.eigh`` and ``linalg.svd`` (``compiler/ops/linalg_spectral.py``), in the one ``VJP_RULES`` table.

```python
w, v = b.op("linalg.eigh", a, UPLO="L")      # the rule gets (g_w, g_v), either None when unused
```

Both are PyTorch's (``linalg_eig_backward`` for a symmetric matrix, ``svd_backward``), written with matmuls,
transposes and the ops' own results, so the backward graph differentiates again. They divide by eigenvalue gaps
``w_j - w_i`` (and ``s_k^2 - s_j^2``, and by ``s`` for ``m != n``): exact for distinct eigen/singular values, inf
where two coincide and the vectors' cotangents there are not 0 (the vectors are then not unique), as PyTorch; where
those cotangents are exactly 0 the term is 0, not PyTorch's 0/0 = NaN, so ``pinv`` of a rank-deficient matrix (its
cut vectors get no cotangent) has a finite gradient. ``eigh``'s gradient is PyTorch's
symmetric one, whichever triangle the kernel read: the derivative along symmetric perturbations, the input the op is
for. ``svd`` with ``full_matrices`` and ``m != n`` differentiates as PyTorch does: through the first ``k`` columns of
``U`` (rows of ``Vh``); the others, any orthonormal basis of the complement, get no gradient.
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.autodiff.rules import Cotangents, _swap_last, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value


def _identity(b: Builder, n: int, like: Value) -> Value:
    return b.constant(np.eye(n), like.type.dtype)


def _row(b: Builder, x: Value) -> Value:
    """``(..., k) -> (..., 1, k)``: scales a matrix's columns (``M diag(x)``)."""
    return b.expand_dims(x, axes=(x.type.rank - 1,))


def _column(b: Builder, x: Value) -> Value:
    """``(..., k) -> (..., k, 1)``: scales a matrix's rows (``diag(x) M``)."""
    return b.expand_dims(x, axes=(x.type.rank,))


def _diagonal_matrix(b: Builder, x: Value) -> Value:
    """``diag(x)``, ``(..., k) -> (..., k, k)``."""
    return b.mul(_row(b, x), _identity(b, x.type.shape[-1], x))


def _plus(b: Builder, x: Value | None, y: Value) -> Value:
    return y if x is None else b.add(x, y)


def _divide_nonzero(b: Builder, numerator: Value, denominator: Value) -> Value:
    """``numerator / denominator``, 0 where both are exactly 0: a cotangent that is 0 stays 0 at a zero gap or
    singular value (``pinv`` of a rank-deficient matrix zeroes the cut vectors' cotangents), where plain division
    gives 0/0 = NaN; a nonzero one over a zero gap is still inf, as PyTorch. Only the divisor is masked (1 there), and
    only where it is 0 too: the quotient stays linear in the numerator with slope ``1 / denominator`` even where the
    numerator is 0. ``kiln.jvp`` transposes this rule at a zero cotangent, so a mask on the numerator alone (0 wherever
    it is 0) zeroed every tangent through svd and eigh (``jacfwd(jacrev(svdvals))``)."""
    both_zero = b.where(b.equal(numerator, b.scalar_like(0.0, numerator)),
                        b.equal(denominator, b.scalar_like(0.0, denominator)), b.constant(False, "bool"))
    return b.div(numerator, b.where(both_zero, b.scalar_like(1.0, denominator), denominator))


def _skew(b: Builder, x: Value) -> Value:
    """``X - X^T``."""
    return b.sub(x, _swap_last(b, x))


@vjp_rule("linalg.eigh")
def eigh_vjp(b: Builder, op: Op, g: tuple[Value | None, Value | None]) -> Cotangents:
    # A = V diag(w) V^T:  dA = V (diag(g_w) + (skew(V^T g_V) / 2) / E) V^T,  E_ij = w_j - w_i (1 on the diagonal,
    # where the skew part is 0)
    (g_w, g_v), (w, v) = g, op.results
    inner = None
    if g_v is not None:
        gaps = b.add(b.sub(_row(b, w), _column(b, w)), _identity(b, w.type.shape[-1], w))
        half_skew = b.mul(_skew(b, b.matmul(_swap_last(b, v), g_v)), b.scalar_like(0.5, w))
        inner = _divide_nonzero(b, half_skew, gaps)
    if g_w is not None:
        inner = _plus(b, inner, _diagonal_matrix(b, g_w))
    return (b.matmul(b.matmul(v, inner), _swap_last(b, v)),)


def _first(b: Builder, x: Value | None, k: int, axis: int) -> Value | None:
    """``x``'s first ``k`` entries along ``axis`` (-1: columns, -2: rows); ``x`` itself when it has just ``k``."""
    if x is None or x.type.shape[axis] == k:
        return x
    return b.slice(x, axis=x.type.rank + axis, start=0, stop=k)


@vjp_rule("linalg.svd")
def svd_vjp(b: Builder, op: Op, g: tuple[Value | None, Value | None, Value | None]) -> Cotangents:
    # A = U diag(S) Vh (k = min(m, n); full_matrices: the first k columns of U and rows of Vh, as PyTorch)
    (g_u, g_s, g_vh), (u, s, vh) = g, op.results
    k = s.type.shape[-1]
    u, g_u, vh, g_vh = _first(b, u, k, -1), _first(b, g_u, k, -1), _first(b, vh, k, -2), _first(b, g_vh, k, -2)
    if g_u is None and g_vh is None:
        return (b.matmul(b.mul(u, _row(b, g_s)), vh),)  # dA = U diag(g_S) Vh
    inner = _rotation_part(b, s, u, vh, g_u, g_vh)
    if g_s is not None:
        inner = b.add(inner, _diagonal_matrix(b, g_s))
    m, n = u.type.shape[-2], vh.type.shape[-1]
    if m > n and g_u is not None:
        return (b.matmul(_add_outside_columns(b, b.matmul(u, inner), u, _divide_nonzero(b, g_u, _row(b, s))), vh),)
    if m < n and g_vh is not None:
        outside = _swap_last(b, _add_outside_columns(b, _swap_last(b, b.matmul(inner, vh)), _swap_last(b, vh),
                                                     _swap_last(b, _divide_nonzero(b, g_vh, _column(b, s)))))
        return (b.matmul(u, outside),)
    return (b.matmul(b.matmul(u, inner), vh),)


def _rotation_part(b: Builder, s: Value, u: Value, vh: Value, g_u: Value | None, g_vh: Value | None) -> Value:
    # (skew(U^T g_U) diag(S) + diag(S) skew(Vh g_Vh^T)) / E,  E_jk = s_k^2 - s_j^2 (1 on the diagonal, where both are 0)
    squares = b.mul(s, s)
    gaps = b.add(b.sub(_row(b, squares), _column(b, squares)), _identity(b, s.type.shape[-1], s))
    numerator = None
    if g_u is not None:
        numerator = b.mul(_skew(b, b.matmul(_swap_last(b, u), g_u)), _row(b, s))
    if g_vh is not None:
        numerator = _plus(b, numerator, b.mul(_column(b, s), _skew(b, b.matmul(vh, _swap_last(b, g_vh)))))
    return _divide_nonzero(b, numerator, gaps)


def _add_outside_columns(b: Builder, inside: Value, q: Value, g_over_s: Value) -> Value:
    # inside + (I - Q Q^T) G diag(1/S): the part of the cotangent outside Q's column space (m > k), written without
    # the m x m projector
    return b.add(inside, b.sub(g_over_s, b.matmul(q, b.matmul(_swap_last(b, q), g_over_s))))
