"""VJP rules of the loss composites, in the one ``VJP_RULES`` table.

A direct rule is cheaper than differentiating the decomposition: the
cross-entropy gradient is one op, ``nn.cross_entropy_grad``, whose
decomposition is ``(softmax(x) sum(q) - q) scale`` instead of the backward of
log-softmax, one-hot and the reductions. Weights
(``weight``, ``pos_weight``) are constants of the loss and get no cotangent.
"""

from __future__ import annotations

from typing import Callable

from kiln.compiler.autodiff.rules import Cotangents, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value
from kiln.compiler.ops.nn import class_targets, log_sigmoid, per_sample_scale, positive_weight


@vjp_rule("nn.cross_entropy")
def cross_entropy_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d loss_i / d x_i = softmax(x_i) sum_c q_ic - q_i, scaled by the reduction: one op (see nn.cross_entropy_grad)
    logits, target, *weight = op.operands
    d_logits = b.cross_entropy_grad(logits, target, g, *weight, **op.attrs)
    d_target = None
    if target.type.dtype.is_float:  # probability targets: no ignore_index, the mean divides by the sample count
        scale = per_sample_scale(b, g, logits, None, op.attrs["reduction"])
        d_target = _probability_target_vjp(b, logits, weight, op.attrs["label_smoothing"], scale)
    return (d_logits, d_target, *[None] * len(weight))


def _probability_target_vjp(b: Builder, logits: Value, weight: list[Value], smoothing: float, scale: Value) -> Value:
    # d loss_i / d t_ic = -(1 - eps) w_c log_softmax(x_i)_c
    factor = b.scalar_like(-(1 - smoothing), logits)
    if weight:
        factor = b.mul(factor, b.reshape(weight[0], shape=logits.type.shape[1:2] + (1,) * (logits.type.rank - 2)))
    return b.mul(b.mul(b.log_softmax(logits, axis=1), factor), scale)


@vjp_rule("nn.nll")
def nll_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d loss_i / d s_i = -q_i
    scores, labels, *weight = op.operands
    targets, divisor = class_targets(b, scores, labels, weight, op.attrs["ignore_index"], 0.0)
    scale = per_sample_scale(b, g, scores, divisor, op.attrs["reduction"])
    return (b.mul(b.neg(targets), scale), None, *[None] * len(weight))


def _sign(b: Builder, d: Value) -> Value:
    # sign(d) = [d > 0] - [d < 0]
    zero = b.scalar_like(0.0, d)
    return b.sub(b.cast(b.greater(d, zero), dtype=d.type.dtype), b.cast(b.less(d, zero), dtype=d.type.dtype))


def _clamp(b: Builder, x: Value, bound: float) -> Value:
    return b.minimum(b.maximum(x, b.scalar_like(-bound, x)), b.scalar_like(bound, x))


def _smooth_l1_derivative(b: Builder, d: Value, beta: float) -> Value:
    return _clamp(b, b.div(d, b.scalar_like(beta, d)), 1.0) if beta else _sign(b, d)


REGRESSION_DERIVATIVES: dict[str, Callable[..., Value]] = {
    "nn.mse": lambda b, d: b.mul(d, b.scalar_like(2.0, d)),  # d d^2 = 2 d
    "nn.l1": _sign,  # d |d| = sign(d)
    "nn.smooth_l1": _smooth_l1_derivative,  # clamp(d / beta, -1, 1)
    "nn.huber": lambda b, d, delta: _clamp(b, d, delta),  # clamp(d, -delta, delta)
}
"""Derivative of the per-element loss w.r.t. ``d = prediction - target``; options follow ``d``."""


@vjp_rule(*REGRESSION_DERIVATIVES)
def regression_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # dp = loss'(p - t) * g (/ count for the mean);  dt = -dp
    prediction, target = op.operands
    options = [value for key, value in op.attrs.items() if key != "reduction"]
    derivative = REGRESSION_DERIVATIVES[op.name](b, b.sub(prediction, target), *options)
    dp = b.mul(derivative, _elementwise_scale(b, g, prediction, op.attrs["reduction"]))
    return dp, b.neg(dp)


@vjp_rule("nn.bce_with_logits")
def bce_with_logits_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # dx = lw sigmoid(x) - pos_weight t  (sigmoid(x) - t without pos_weight);  dt = -x - (pos_weight - 1) log_sigmoid(x)
    logits, target, *pos_weight = op.operands
    scale = _elementwise_scale(b, g, logits, op.attrs["reduction"])
    if pos_weight:
        d_logits = b.sub(b.mul(positive_weight(b, target, pos_weight), b.sigmoid(logits)), b.mul(pos_weight[0], target))
        excess = b.sub(pos_weight[0], b.scalar_like(1.0, logits))
        d_target = b.sub(b.neg(logits), b.mul(excess, log_sigmoid(b, logits)))
    else:
        d_logits, d_target = b.sub(b.sigmoid(logits), target), b.neg(logits)
    return (b.mul(d_logits, scale), b.mul(d_target, scale), *[None] * len(pos_weight))


def _elementwise_scale(b: Builder, g: Value, like: Value, reduction: str) -> Value:
    if reduction == "mean":
        return b.div(g, b.numel(like, dtype=g.type.dtype))
    return g
