"""VJP rules of the extra ``tensor`` primitives (``compiler/ops/movement.py``), in the one ``VJP_RULES`` table.

Pairs of ops transpose each other, so every rule here is built from
differentiable ops: take <-> scatter_add, slice <-> pad, expand_dims <-> squeeze,
cumsum <-> its reverse (``compiler/ops/scan.py``). cumprod's rule is a masked one, exact where the operand has zeros.
"""

from __future__ import annotations

import math

from kiln.compiler.autodiff.rules import Cotangents, reduce_max_vjp, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value
from kiln.compiler.ir.types import normalize_axes, normalize_axis


def _zero(b: Builder, like: Value) -> Value:
    return b.scalar_like(0.0, like)


@vjp_rule("tensor.abs")
def abs_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d|x| = sign(x), 0 at 0 as PyTorch
    x = op.operands[0]
    negative = b.where(b.less(x, _zero(b, x)), b.neg(g), _zero(b, g))
    return (b.where(b.greater(x, _zero(b, x)), g, negative),)


@vjp_rule("tensor.erf")
def erf_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d erf(x) = 2/sqrt(pi) exp(-x^2)
    x = op.operands[0]
    return (b.mul(g, b.mul(b.scalar_like(2 / math.sqrt(math.pi), x), b.exp(b.neg(b.mul(x, x))))),)


@vjp_rule("tensor.rsqrt")
def rsqrt_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d x^(-1/2) = -1/2 x^(-3/2) = -y^3 / 2
    y = op.result
    return (b.mul(g, b.mul(b.scalar_like(-0.5, y), b.mul(y, b.mul(y, y)))),)


@vjp_rule("tensor.sin")
def sin_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d sin(x) = cos(x)
    return (b.mul(g, b.cos(op.operands[0])),)


@vjp_rule("tensor.cos")
def cos_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d cos(x) = -sin(x)
    return (b.mul(g, b.neg(b.sin(op.operands[0]))),)


@vjp_rule("tensor.floor", "tensor.ceil", "tensor.round")
def rounding_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # a step function: 0 almost everywhere; zeros (not g * 0, which is NaN at an infinite g), as PyTorch's
    x = op.operands[0]
    return (b.broadcast_to(_zero(b, x), shape=x.type.shape),)


@vjp_rule("tensor.cumsum")
def cumsum_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # y_i = sum_{j <= i} x_j, so dx_j = sum_{i >= j} g_i: the cumsum of g run the other way
    return (b.cumsum(g, axis=op.attrs["axis"], reverse=not op.attrs["reverse"]),)


@vjp_rule("tensor.atan")
def atan_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d atan(x) = 1 / (1 + x^2), 0 at +-inf
    x = op.operands[0]
    return (b.div(g, b.add(b.mul(x, x), b.scalar_like(1.0, x))),)


@vjp_rule("tensor.asin")
def asin_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d asin(x) = 1 / sqrt(1 - x^2), inf at +-1 and NaN beyond, as PyTorch's
    return (b.mul(g, _inverse_cosine_of_asin(b, op.operands[0])),)


@vjp_rule("tensor.acos")
def acos_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d acos(x) = -1 / sqrt(1 - x^2)
    return (b.mul(b.neg(g), _inverse_cosine_of_asin(b, op.operands[0])),)


def _inverse_cosine_of_asin(b: Builder, x: Value) -> Value:
    """``1 / sqrt(1 - x^2)``: ``1 / cos(asin(x))``."""
    return b.rsqrt(b.sub(b.scalar_like(1.0, x), b.mul(x, x)))


@vjp_rule("tensor.cumprod")
def cumprod_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # y_i = prod_{j <= i} x_j, so dx_k = sum_{i >= k} g_i prod_{j <= i, j != k} x_j (j <= i: in the scan's order).
    # Where x_k != 0 that is sum_{i >= k} g_i y_i / x_k. At the first zero z it is sum_{i >= z} g_i y'_i, with y' the
    # cumprod of x with that zero read as 1; at later zeros it is 0 (x_z is a factor). No division by a zero, and
    # every branch is a polynomial in x near the point, so differentiating again is exact with at most one zero.
    x, axis, reverse = op.operands[0], op.attrs["axis"], op.attrs["reverse"]
    zero, one = _zero(b, x), b.scalar_like(1.0, x)
    nonzero = b.not_equal(x, zero)
    zeros_so_far = b.cumsum(b.where(nonzero, zero, one), axis=axis, reverse=reverse)
    first_zero = b.equal(b.where(nonzero, zero, zeros_so_far), one)
    back = not reverse  # sum_{i >= k}: the cumsum the other way
    divided = b.div(b.cumsum(b.mul(g, op.result), axis=axis, reverse=back), b.where(nonzero, x, one))
    skipped = b.cumprod(b.where(first_zero, one, x), axis=axis, reverse=reverse)
    at_first_zero = b.cumsum(b.mul(g, skipped), axis=axis, reverse=back)
    return (b.where(nonzero, divided, b.where(first_zero, at_first_zero, zero)),)


@vjp_rule("tensor.clip")
def clip_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d clip(x) = [lo <= x <= hi], as PyTorch's clamp
    x, low, high = op.operands[0], op.attrs["min"], op.attrs["max"]
    if high is not None:
        g = b.where(b.greater(x, b.scalar_like(high, x)), _zero(b, g), g)
    if low is not None:
        g = b.where(b.less(x, b.scalar_like(low, x)), _zero(b, g), g)
    return (g,)


vjp_rule("tensor.reduce_min")(reduce_max_vjp)  # the cotangent is shared by the positions that attain the extremum


@vjp_rule("tensor.take")
def take_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # take is linear: its transpose sums each picked row's cotangent back into place
    x, indices = op.operands
    return b.scatter_add(g, indices, axis=op.attrs["axis"], shape=x.type.shape), None


@vjp_rule("tensor.scatter_add")
def scatter_add_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    return b.take(g, op.operands[1], axis=op.attrs["axis"]), None


@vjp_rule("tensor.concat")
def concat_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # each operand's cotangent is its own stretch of g
    axis = normalize_axis(op.attrs["axis"], g.type.rank)
    pieces, start = [], 0
    for x in op.operands:
        size = x.type.shape[axis]
        whole = len(op.operands) == 1
        pieces.append(g if whole else b.slice(g, axis=axis, start=start, stop=start + size, step=1))
        start = start if whole else start + size
    return tuple(pieces)


@vjp_rule("tensor.slice")
def slice_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # the taken elements go back to their places: pad with start before, step - 1 between, the rest after
    x, attrs = op.operands[0], op.attrs
    axis = normalize_axis(attrs["axis"], x.type.rank)
    count = op.result.type.shape[axis]
    if count == 0:
        return (b.broadcast_to(b.constant(0.0, x.type.dtype), shape=x.type.shape),)
    last = attrs["start"] + (count - 1) * attrs["step"]
    low, high, interior = ([0] * x.type.rank for _ in range(3))
    low[axis], high[axis], interior[axis] = attrs["start"], x.type.shape[axis] - last - 1, attrs["step"] - 1
    return (b.pad(g, low=tuple(low), high=tuple(high), interior=tuple(interior)),)


@vjp_rule("tensor.pad")
def pad_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # the original elements sit at low + i (interior + 1): a strided slice per padded axis
    x, attrs = op.operands[0], op.attrs
    for axis, (dim, low, interior) in enumerate(zip(x.type.shape, attrs["low"], attrs["interior"])):
        if g.type.shape[axis] != dim:
            g = b.slice(g, axis=axis, start=low, stop=low + (dim - 1) * (interior + 1) + 1, step=interior + 1)
    return (g,)


@vjp_rule("tensor.expand_dims")
def expand_dims_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    return (b.squeeze(g, axes=op.attrs["axes"]),)


@vjp_rule("tensor.squeeze")
def squeeze_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    return (b.expand_dims(g, axes=normalize_axes(op.attrs["axes"], op.operands[0].type.rank)),)


@vjp_rule("tensor.triu", "tensor.tril")
def mask_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # a mask is linear and self-adjoint
    return (b.op(op.name, g, k=op.attrs["k"]),)
