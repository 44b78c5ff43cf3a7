"""VJP rules of the ``linalg`` dialect (``compiler/ops/linalg.py``), in the one ``VJP_RULES`` table.

Each rule is built from ``linalg`` ops, matmuls and transposes, so the backward graph differentiates again.
``det``'s and ``logabsdet``'s go through ``inv(A)^T``: exact away from singular matrices; at a singular ``A``
they are inf/NaN where PyTorch (through an SVD) still gives the adjugate. ``cholesky``'s is PyTorch's symmetric
one, the exact derivative of the kernel, which factors ``(A + A^T) / 2``.
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.autodiff.rules import Cotangents, _swap_last, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value


def _per_matrix(b: Builder, g: Value) -> Value:
    """A cotangent of one number per matrix, ``(...)``, as ``(..., 1, 1)`` to scale whole matrices."""
    return b.reshape(g, shape=g.type.shape + (1, 1))


@vjp_rule("linalg.inv")
def inv_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # Y = A^-1:  dA = -Y^T G Y^T
    inverse_t = _swap_last(b, op.result)
    return (b.neg(b.matmul(b.matmul(inverse_t, g), inverse_t)),)


@vjp_rule("linalg.solve")
def solve_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # X = A^-1 B:  dB = A^-T G,  dA = -dB X^T   (the pass sums broadcast batch dims)
    a = op.operands[0]
    grad_b = b.op("linalg.solve", _swap_last(b, a), g)
    return b.neg(b.matmul(grad_b, _swap_last(b, op.result))), grad_b


@vjp_rule("linalg.det")
def det_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d det(A) = det(A) A^-T
    inverse_t = _swap_last(b, b.op("linalg.inv", op.operands[0]))
    return (b.mul(_per_matrix(b, b.mul(g, op.result)), inverse_t),)


@vjp_rule("linalg.logabsdet")
def logabsdet_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d log|det(A)| = A^-T
    inverse_t = _swap_last(b, b.op("linalg.inv", op.operands[0]))
    return (b.mul(_per_matrix(b, g), inverse_t),)


@vjp_rule("linalg.cholesky")
def cholesky_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # A = L L^T:  dA = sym(L^-T Phi(L^T tril(G)) L^-1), Phi: the lower triangle with its diagonal halved
    lower = op.result
    n = lower.type.shape[-1]
    halve_diagonal = b.constant(np.ones((n, n)) - 0.5 * np.eye(n), lower.type.dtype)
    lower_t = _swap_last(b, lower)
    phi = b.mul(b.tril(b.matmul(lower_t, b.tril(g))), halve_diagonal)
    left = b.op("linalg.solve_triangular", lower_t, phi, upper=True)  # L^-T Phi
    both = _swap_last(b, b.op("linalg.solve_triangular", lower_t, _swap_last(b, left), upper=True))  # L^-T Phi L^-1
    return (b.mul(b.add(both, _swap_last(b, both)), b.scalar_like(0.5, both)),)


@vjp_rule("linalg.solve_triangular")
def solve_triangular_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # X = T^-1 B:  dB = T^-T G,  dA = -dB X^T on T's triangle (strictly inside it when the diagonal is read as ones)
    a, upper, unit = op.operands[0], op.attrs["upper"], op.attrs["unitriangular"]
    grad_b = b.op("linalg.solve_triangular", _swap_last(b, a), g, upper=not upper, unitriangular=unit)
    full = b.neg(b.matmul(grad_b, _swap_last(b, op.result)))
    grad_a = b.triu(full, k=int(unit)) if upper else b.tril(full, k=-int(unit))
    return grad_a, grad_b
