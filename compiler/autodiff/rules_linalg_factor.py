"""VJP rules of the ``linalg`` factorizations (``compiler/ops/linalg_factor.py``), in the one ``VJP_RULES`` table.

- ``qr_q``/``qr_r``: the standard QR rule (PyTorch's ``linalg_qr_backward``), linear in ``(gQ, gR)``, so each op
  gives its own term and the pass sums them. ``m >= n``: ``gA = (gQ + Q copyltu(R gR^T - gQ^T Q)) R^-T``; ``m < n``:
  ``A = [X Y]``, ``R = [U V]`` with ``X = Q U`` square and ``V = Q^T Y``, so ``gY = Q gV`` and ``X`` takes the square
  rule with ``gQ + Y gV^T``. As PyTorch, mode ``"r"`` (no ``Q``) and ``"complete"`` with ``m > n`` (``Q``'s extra
  columns are not unique) refuse, naming the op and the user's line.
- ``lu_factor``: ``A = P L U``, ``gL``/``gU`` the strictly lower / upper parts of the packed cotangent; square:
  ``gA = P L^-T (tril_-1(L^T gL) + triu(gU U^T)) U^-T``. A tall LU's extra rows ``L2 = (P^T A)_2 U^-1`` and a wide
  one's extra columns ``U2 = L^-1 (P^T A)_2`` add their terms first (PyTorch's ``linalg_lu_backward``).
- ``matrix_exp``: ``gA`` is the upper-right block of ``exp([[A^T, G], [0, A^T]])`` (the derivative of ``exp`` at
  ``A^T`` in direction ``G``), exact, and again a ``matrix_exp``, so the rule differentiates again.
- ``checked``: the identity on ``x``.

Every rule is built from differentiable ops (``lu_pivots`` only rebuilds the constant ``P``), so the backward graph
differentiates again.
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.autodiff.differentiate import AutodiffError
from kiln.compiler.autodiff.rules import Cotangents, _swap_last, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value


def _columns(b: Builder, x: Value, start: int, stop: int) -> Value:
    return b.slice(x, axis=x.type.rank - 1, start=start, stop=stop)


def _rows(b: Builder, x: Value, start: int, stop: int) -> Value:
    return b.slice(x, axis=x.type.rank - 2, start=start, stop=stop)


def _right_solve_upper_t(b: Builder, x: Value, upper: Value, unit: bool = False) -> Value:
    """``X U^-T`` (``U`` the upper triangle of ``upper``) as ``(U^-1 X^T)^T``."""
    return _swap_last(b, b.op("linalg.solve_triangular", upper, _swap_last(b, x), upper=True, unitriangular=unit))


# QR ----------------------------------------------------------------------------------------------------------------


def _refuse_qr(op: Op, why: str) -> AutodiffError:
    where = f" (from {op.location})" if op.location else ""
    return AutodiffError(f"{op.name}{where}: {why}; PyTorch refuses this derivative too. Use "
                         "torch.linalg.qr(A, mode='reduced') where you differentiate through the QR")


def _qr_factors(b: Builder, op: Op) -> tuple[Value, Value]:
    """``(Q, R)`` of the op's operand (the other factor re-emitted; CSE merges it with the forward one)."""
    a, mode = op.operands[0], op.attrs["mode"]
    m, n = a.type.shape[-2:]
    if mode == "r":
        raise _refuse_qr(op, "mode='r' computes no Q, which the derivative needs")
    if mode == "complete" and m > n:
        raise _refuse_qr(op, f"with mode='complete' and more rows than columns ({m} > {n}) Q is not unique")
    if op.name == "linalg.qr_q":
        return op.result, b.op("linalg.qr_r", a, mode=mode)
    return b.op("linalg.qr_q", a, mode=mode), op.result


def _qr_square_backward(b: Builder, q: Value, r: Value, gq: Value | None, gr: Value | None) -> Value:
    # A = Q R, R square:  M = R gR^T - gQ^T Q,  gA = (gQ + Q copyltu(M)) R^-T,  copyltu(M) = tril(M) + tril(M, -1)^T
    terms = ([b.matmul(r, _swap_last(b, gr))] if gr is not None else []) + ([b.neg(b.matmul(_swap_last(b, gq), q))] if gq is not None else [])
    m = terms[0] if len(terms) == 1 else b.add(*terms)
    left = b.matmul(q, b.add(b.tril(m), _swap_last(b, b.tril(m, k=-1))))
    return _right_solve_upper_t(b, left if gq is None else b.add(gq, left), r)


def _qr_backward(b: Builder, a: Value, q: Value, r: Value, gq: Value | None, gr: Value | None) -> Value:
    m, n = a.type.shape[-2:]
    if m >= n:
        return _qr_square_backward(b, q, r, gq, gr)
    # A = [X Y], R = [U V]: X = Q U, V = Q^T Y  =>  gY = Q gV, and X's rule sees gQ + Y gV^T
    y, u = _columns(b, a, m, n), _columns(b, r, 0, m)
    if gr is None:
        grad_x = _qr_square_backward(b, q, u, gq, None)
        return b.pad(grad_x, low=(0,) * a.type.rank, high=(0,) * (a.type.rank - 1) + (n - m,), interior=(0,) * a.type.rank)
    gu, gv = _columns(b, gr, 0, m), _columns(b, gr, m, n)
    from_y = b.matmul(y, _swap_last(b, gv))
    grad_x = _qr_square_backward(b, q, u, from_y if gq is None else b.add(gq, from_y), gu)
    return b.concat(grad_x, b.matmul(q, gv), axis=a.type.rank - 1)


@vjp_rule("linalg.qr_q")
def qr_q_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    q, r = _qr_factors(b, op)
    return (_qr_backward(b, op.operands[0], q, r, g, None),)


@vjp_rule("linalg.qr_r")
def qr_r_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    q, r = _qr_factors(b, op)
    return (_qr_backward(b, op.operands[0], q, r, None, g),)


# LU ----------------------------------------------------------------------------------------------------------------


def permutation_matrix(b: Builder, a: Value) -> Value:
    """``P`` of ``A = P L U`` in ``A``'s dtype: ``P[i, j] = (perm[j] == i)``."""
    m = a.type.shape[-2]
    perm = b.op("linalg.pivots_to_permutation", b.op("linalg.lu_pivots", a), size=m)
    rows = b.constant(np.arange(m).reshape(m, 1), "i64")
    return b.cast(b.equal(b.expand_dims(perm, axes=(perm.type.rank - 1,)), rows), dtype=a.type.dtype)


def _lu_square_backward(b: Builder, packed: Value, gl: Value, gu: Value) -> Value:
    # B = L U square:  gB = L^-T (tril_-1(L^T gL) + triu(gU U^T)) U^-T
    n = packed.type.shape[-1]
    lower = b.add(b.tril(packed, k=-1), b.constant(np.eye(n), packed.type.dtype))
    inner = b.add(b.tril(b.matmul(_swap_last(b, lower), gl), k=-1), b.triu(b.matmul(gu, _swap_last(b, b.triu(packed)))))
    left = b.op("linalg.solve_triangular", _swap_last(b, packed), inner, upper=True, unitriangular=True)  # L^-T inner
    return _right_solve_upper_t(b, left, packed)


def _lu_tall_backward(b: Builder, packed: Value, g: Value, n: int) -> Value:
    # P^T A = [L1; L2] U:  L2 = B2 U^-1  =>  gB2 = gL2 U^-T, and U's cotangent gains -triu(L2^T gB2)
    m = packed.type.shape[-2]
    square, l2, head = _rows(b, packed, 0, n), _rows(b, packed, n, m), _rows(b, g, 0, n)
    grad_b2 = _right_solve_upper_t(b, _rows(b, g, n, m), square)
    gu = b.sub(b.triu(head), b.triu(b.matmul(_swap_last(b, l2), grad_b2)))
    return b.concat(_lu_square_backward(b, square, b.tril(head, k=-1), gu), grad_b2, axis=g.type.rank - 2)


def _lu_wide_backward(b: Builder, packed: Value, g: Value, m: int) -> Value:
    # P^T A = L [U1 U2]:  U2 = L^-1 B2  =>  gB2 = L^-T gU2, and L's cotangent gains -tril_-1(gB2 U2^T)
    n = packed.type.shape[-1]
    square, u2, head = _columns(b, packed, 0, m), _columns(b, packed, m, n), _columns(b, g, 0, m)
    grad_b2 = b.op("linalg.solve_triangular", _swap_last(b, square), _columns(b, g, m, n), upper=True, unitriangular=True)
    gl = b.sub(b.tril(head, k=-1), b.tril(b.matmul(grad_b2, _swap_last(b, u2)), k=-1))
    return b.concat(_lu_square_backward(b, square, gl, b.triu(head)), grad_b2, axis=g.type.rank - 1)


@vjp_rule("linalg.lu_factor")
def lu_factor_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # A = P L U:  gA = P gB, gB the cotangent of B = P^T A = L U
    a, packed = op.operands[0], op.result
    m, n = a.type.shape[-2:]
    if m == n:
        grad_b = _lu_square_backward(b, packed, b.tril(g, k=-1), b.triu(g))
    else:
        grad_b = _lu_tall_backward(b, packed, g, n) if m > n else _lu_wide_backward(b, packed, g, m)
    return (b.matmul(permutation_matrix(b, a), grad_b),)


# The matrix exponential and the error check --------------------------------------------------------------------------


@vjp_rule("linalg.matrix_exp")
def matrix_exp_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # gA = the upper-right block of exp([[A^T, G], [0, A^T]])
    a = op.operands[0]
    rank, n = a.type.rank, a.type.shape[-1]
    a_t = _swap_last(b, a)
    lower_half = b.pad(a_t, low=(0,) * (rank - 1) + (n,), high=(0,) * rank, interior=(0,) * rank)
    block = b.concat(b.concat(a_t, g, axis=rank - 1), lower_half, axis=rank - 2)
    return (_columns(b, _rows(b, b.op("linalg.matrix_exp", block), 0, n), n, 2 * n),)


@vjp_rule("linalg.checked")
def checked_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    return g, None
