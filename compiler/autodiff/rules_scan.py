"""VJP rules of ``tensor.logcumsumexp`` and ``tensor.decayed_cumsum`` (``compiler/ops/scan.py``), in the one
``VJP_RULES`` table.

``y_i = log sum_{j <= i} exp(x_j)``, so ``dx_j = sum_{i >= j} g_i exp(x_j - y_i) = exp(x_j - y_j) t_j`` with
``t_j = sum_{i >= j} g_i exp(y_j - y_i)``: ``tensor.decayed_cumsum`` of ``g`` and ``-y`` run the other way (the same with
``reverse``, the directions swapped). Every weight is at most 1 (``y`` never decreases along the scan), so nothing overflows for inputs far apart, and the rule is linear in ``g`` (forward
mode transposes it). An ``x_j = -inf`` gets 0: where ``y_j`` is -inf too (every ``x`` up to ``j`` is -inf) the weights
have no limit and PyTorch gives NaN.

``decayed_cumsum`` ``t_i = sum_{j <= i} g_j exp(y_j - y_i)`` is linear in ``g`` with the transpose ``D(u) =
decayed_cumsum(u, -y)`` the other way (``sum_{j >= i} u_j exp(y_i - y_j)``); in ``y``: ``dt_i/dy_k = [k <= i] g_k
exp(y_k - y_i) - [k = i] t_i``, so ``dy = g D(u) - u t``; with ``reverse`` the same, the directions swapped.

``tensor.cumargmax``/``tensor.cumargmin`` are ``non_differentiable``: their values are gathered from the operand.
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.autodiff.rules import Cotangents, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value


@vjp_rule("tensor.logcumsumexp")
def logcumsumexp_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # dx_j = exp(x_j - y_j) sum_{i >= j} g_i exp(y_j - y_i); 0 where x_j = -inf
    x, y = op.operands[0], op.result
    spread = b.decayed_cumsum(g, b.neg(y), axis=op.attrs["axis"], reverse=not op.attrs["reverse"])
    finite = b.greater(x, b.scalar_like(-np.inf, x))
    share = b.exp(b.sub(b.where(finite, x, y), y))
    return (b.where(finite, b.mul(share, spread), b.scalar_like(0.0, g)),)


@vjp_rule("tensor.decayed_cumsum")
def decayed_cumsum_vjp(b: Builder, op: Op, u: Value) -> Cotangents:
    # dg = D(u) = decayed_cumsum(u, -y) the other way; dy = g D(u) - u t
    g, y = op.operands
    back = b.decayed_cumsum(u, b.neg(y), axis=op.attrs["axis"], reverse=not op.attrs["reverse"])
    return back, b.sub(b.mul(g, back), b.mul(u, op.result))
