"""VJP rules of the ``linalg`` dialect (``compiler/ops/linalg.py``), in the one ``VJP_RULES`` table.

Each rule is built from ``linalg`` ops, matmuls and transposes, so the backward graph differentiates again.
``det``'s is PyTorch's (``linalg_det_backward``): ``det(A) A^-T`` where ``|det A| >= eps`` (the dtype's), else the
transposed adjugate from an SVD, ``A = U S Vh``: ``adj(A)^T = det(U) det(Vh) U diag(prod_{j != i} s_j) Vh``, which
needs no inverse and exists for a singular ``A`` (nonzero at rank ``n - 1``, zero below). Both are built and a
``where`` picks one per matrix (the graph is static; the inverse reads the identity in place of a singular matrix, so
it never raises and its backward meets no inf). That is PyTorch's differentiable path (``create_graph=True``); its
plain backward gives 0 for an exactly singular matrix (``det * A^-H`` solved with the zero right-hand side ``det I``),
which kiln does not copy: the adjugate is the derivative there. ``logabsdet``'s is PyTorch's ``A^-T`` (its LU
solve) wherever ``log|det A|`` is finite, and ``adj(A)^T / det A`` where it is -inf (an exactly singular ``A``, which
``inv`` refuses): inf where the adjugate is nonzero and NaN where it is 0, as PyTorch's LU solve (whose signs there
follow its pivots).
``cholesky``'s is PyTorch's symmetric one, the exact derivative of the kernel, which factors ``(A + A^T) / 2``.
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
    # d det(A) = adj(A)^T = det(A) A^-T (A invertible)
    a = op.operands[0]
    singular = _singular(b, a, op.result)
    regular = b.mul(_per_matrix(b, b.mul(g, op.result)), _regular_inverse_t(b, a, singular))
    return (b.where(singular, b.mul(_per_matrix(b, g), _adjugate_t(b, a)), regular),)


@vjp_rule("linalg.logabsdet")
def logabsdet_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d log|det(A)| = A^-T = adj(A)^T / det(A)
    a = op.operands[0]
    singular = _per_matrix(b, b.equal(op.result, b.scalar_like(-np.inf, op.result)))  # a zero pivot: inv would raise
    at_singular = b.mul(_per_matrix(b, b.div(g, b.op("linalg.det", a))), _adjugate_t(b, a))
    return (b.where(singular, at_singular, b.mul(_per_matrix(b, g), _regular_inverse_t(b, a, singular))),)


def _singular(b: Builder, a: Value, determinant: Value) -> Value:
    """``|det A| < eps`` per matrix, as ``(..., 1, 1)``: PyTorch's test for the adjugate path (the dtype's epsilon,
    absolute, as its ``linalg_det_backward``)."""
    eps = b.scalar_like(float(np.finfo(a.type.dtype.numpy).eps), determinant)
    return _per_matrix(b, b.less(b.abs(determinant), eps))


def _regular_inverse_t(b: Builder, a: Value, singular: Value) -> Value:
    """``A^-T``, of the identity in place of each singular matrix (which the caller's ``where`` discards)."""
    identity = b.constant(np.eye(a.type.shape[-1]), a.type.dtype)
    return _swap_last(b, b.op("linalg.inv", b.where(singular, identity, a)))


def _adjugate_t(b: Builder, a: Value) -> Value:
    """``adj(A)^T = det(U) det(Vh) U diag(prod_{j != i} s_j) Vh`` of ``A = U S Vh`` (PyTorch's singular case). The
    signs ``det(U) det(Vh) = +-1`` have slope 0 (``tr(U^T dU) = 0``), so ``det_sign``, which passes no gradient."""
    u, s, vh = b.op("linalg.svd", a, full_matrices=False)
    sign = b.mul(b.op("linalg.det_sign", u), b.op("linalg.det_sign", vh))
    scales = b.mul(_products_of_others(b, s), b.expand_dims(sign, axes=(sign.type.rank,)))
    return b.matmul(b.mul(u, b.expand_dims(scales, axes=(scales.type.rank - 1,))), vh)


def _products_of_others(b: Builder, s: Value) -> Value:
    """``prod_{j != i} s_j`` along the last axis, from exclusive running products each way (no division: exact where
    some ``s_j`` are 0; PyTorch's ``prod_safe_zeros_backward``)."""
    rank, n = s.type.rank, s.type.shape[-1]
    if n == 1:
        return b.broadcast_to(b.scalar_like(1.0, s), shape=s.type.shape)
    before = b.pad(b.slice(s, axis=rank - 1, start=0, stop=n - 1), low=(0,) * (rank - 1) + (1,), high=(0,) * rank,
                   interior=(0,) * rank, value=1.0)
    after = b.pad(b.slice(s, axis=rank - 1, start=1, stop=n), low=(0,) * rank, high=(0,) * (rank - 1) + (1,),
                  interior=(0,) * rank, value=1.0)
    return b.mul(b.cumprod(before, axis=rank - 1), b.cumprod(after, axis=rank - 1, reverse=True))


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
