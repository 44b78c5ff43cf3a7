"""The ``nn`` dialect: composites with a decomposition into ``tensor`` primitives.

Backends may lower a composite directly (a fused softmax) or let ``decompose``
expand it; autodiff uses a direct VJP rule where one is registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType, broadcast_shapes, format_shape, normalize_axis
from kiln.compiler.ops.registry import register_decomposition, register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value

REDUCTIONS = ("mean", "sum", "none")


def _softmax_shape(op: str):
    def shape(x: TensorType, *, axis: int) -> TensorType:
        if not x.dtype.is_float:
            raise ShapeError(f"{op} needs a floating-point operand, got {x}")
        normalize_axis(axis, x.rank)
        return x

    return shape


register_op("nn.softmax", traits={"composite"}, axis=-1)(_softmax_shape("nn.softmax"))
register_op("nn.log_softmax", traits={"composite"}, axis=-1)(_softmax_shape("nn.log_softmax"))


@register_decomposition("nn.softmax")
def softmax_decomposition(b: "Builder", x: "Value", *, axis: int) -> "Value":
    # softmax(x) = exp(x - max(x)) / sum(exp(x - max(x)))
    shifted_exp = b.exp(b.sub(x, b.reduce_max(x, axes=(axis,), keepdims=True)))
    return b.div(shifted_exp, b.reduce_sum(shifted_exp, axes=(axis,), keepdims=True))


@register_op("nn.softmax_grad", traits={"composite"}, axis=-1)
def softmax_grad_shape(y: TensorType, g: TensorType, *, axis: int) -> TensorType:
    """The VJP of ``y = softmax(x)`` for the cotangent ``g`` of ``y``: ``y * (g - sum(g * y))`` along ``axis``."""
    if y != g:
        raise ShapeError(f"nn.softmax_grad needs the softmax and its cotangent of one type, got {y} and {g}")
    return _softmax_shape("nn.softmax_grad")(y, axis=axis)


@register_decomposition("nn.softmax_grad")
def softmax_grad_decomposition(b: "Builder", y: "Value", g: "Value", *, axis: int) -> "Value":
    # dx = y * (g - sum(g * y))
    return b.mul(y, b.sub(g, b.reduce_sum(b.mul(g, y), axes=(axis,), keepdims=True)))


@register_decomposition("nn.log_softmax")
def log_softmax_decomposition(b: "Builder", x: "Value", *, axis: int) -> "Value":
    # log_softmax(x) = (x - max) - log(sum(exp(x - max)))
    shifted = b.sub(x, b.reduce_max(x, axes=(axis,), keepdims=True))
    return b.sub(shifted, b.log(b.reduce_sum(b.exp(shifted), axes=(axis,), keepdims=True)))


def _reduced_loss_type(op: str, per_sample: TensorType, reduction: str) -> TensorType:
    if reduction not in REDUCTIONS:
        raise ShapeError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return per_sample if reduction == "none" else per_sample.with_shape(())


def reduce_loss(b: "Builder", per_element: "Value", reduction: str) -> "Value":
    """Apply a loss ``reduction`` (mean, sum or none) over every axis."""
    if reduction == "none":
        return per_element
    reduce = b.reduce_mean if reduction == "mean" else b.reduce_sum
    return reduce(per_element, axes=None)


# --- class losses: cross-entropy and NLL over (N, C) or (N, C, d1, ...) scores -------------------
#
# Both are  loss_i = -sum_c q_ic s_ic  (s: log-probabilities) with target weights
#   q_ic = keep_i w_c ((1 - eps) onehot(y_i)_c + eps / C)     for integer labels y
#   q_ic = w_c (t_ic (1 - eps) + eps / C)                     for class probabilities t
# and "mean" divides the sum by sum_i keep_i w_{y_i} (labels) or by the number of samples
# (probabilities), which is PyTorch's (1 - eps) nll + eps / C * smoothing term, term by term.


def _class_loss_shape(op: str, scores: TensorType, target: TensorType, weight: tuple[TensorType, ...], probabilities: bool) -> TensorType:
    """The per-sample type ``(N, d1, ...)``, after checking targets and the optional ``(C,)`` class weight."""
    if scores.rank < 2 or not scores.dtype.is_float:
        raise ShapeError(f"{op} needs float scores of shape (N, C) or (N, C, d1, ...), got {scores}")
    per_sample = scores.with_shape(scores.shape[:1] + scores.shape[2:])
    if probabilities and target.dtype.is_float:
        if target != scores:
            raise ShapeError(f"{op}: class-probability targets have the logits' type {scores}, got {target}")
    elif not target.dtype.is_int or target.shape != per_sample.shape:
        raise ShapeError(
            f"{op} needs integer labels of shape {format_shape(per_sample.shape)} "
            f"for logits {format_shape(scores.shape)}, got {target}"
        )
    expected_weight = TensorType(scores.shape[1:2], scores.dtype)
    if len(weight) > 1 or any(w != expected_weight for w in weight):
        raise ShapeError(f"{op}: the optional class weight is a {expected_weight}, got {', '.join(map(str, weight))}")
    return per_sample


@register_op("nn.cross_entropy", traits={"composite"}, reduction="mean", ignore_index=-100, label_smoothing=0.0)
def cross_entropy_shape(
    logits: TensorType, target: TensorType, *weight: TensorType, reduction: str, ignore_index: int, label_smoothing: float
) -> TensorType:
    """Softmax cross-entropy of ``(N, C, d...)`` logits against ``(N, d...)`` integer labels or class probabilities.

    An optional third operand is a ``(C,)`` class weight.
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ShapeError(f"nn.cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    per_sample = _class_loss_shape("nn.cross_entropy", logits, target, weight, probabilities=True)
    return _reduced_loss_type("nn.cross_entropy", per_sample, reduction)


@register_decomposition("nn.cross_entropy")
def cross_entropy_decomposition(
    b: "Builder", logits: "Value", target: "Value", *weight: "Value", reduction: str, ignore_index: int, label_smoothing: float
) -> "Value":
    # loss_i = -sum_c q_ic log_softmax(x_i)_c
    targets, divisor = class_targets(b, logits, target, weight, ignore_index, label_smoothing)
    per_sample = b.neg(b.reduce_sum(b.mul(targets, b.log_softmax(logits, axis=1)), axes=(1,)))
    return reduce_class_loss(b, per_sample, divisor, reduction)


@register_op("nn.cross_entropy_grad", traits={"composite"}, reduction="mean", ignore_index=-100, label_smoothing=0.0)
def cross_entropy_grad_shape(
    logits: TensorType, target: TensorType, cotangent: TensorType, *weight: TensorType, reduction: str, ignore_index: int,
    label_smoothing: float
) -> TensorType:
    """``nn.cross_entropy``'s gradient with respect to its logits, given the loss's cotangent; the optional class weight last.

    Autodiff's rule emits it as one op, so that a backend can compute it together with the loss (one max, exp and
    sum for both); its decomposition is the rule's expression.
    """
    loss = cross_entropy_shape(logits, target, *weight, reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)
    if cotangent != loss:
        raise ShapeError(f"nn.cross_entropy_grad: the cotangent must have the loss's type {loss}, got {cotangent}")
    return logits


@register_decomposition("nn.cross_entropy_grad")
def cross_entropy_grad_decomposition(
    b: "Builder", logits: "Value", target: "Value", cotangent: "Value", *weight: "Value", reduction: str, ignore_index: int,
    label_smoothing: float
) -> "Value":
    # d loss_i / d x_i = (softmax(x_i) sum_c q_ic - q_i) scale_i
    targets, divisor = class_targets(b, logits, target, weight, ignore_index, label_smoothing)
    scale = per_sample_scale(b, cotangent, logits, divisor, reduction)
    mass = b.reduce_sum(targets, axes=(1,), keepdims=True)
    return b.mul(b.sub(b.mul(b.softmax(logits, axis=1), mass), targets), scale)


def per_sample_scale(b: "Builder", cotangent: "Value", scores: "Value", divisor: "Value | None", reduction: str) -> "Value":
    """A reduced class loss's cotangent as a factor on each sample's ``(N, 1, d...)`` slice of the scores."""
    if reduction == "none":
        return b.reshape(cotangent, shape=cotangent.type.shape[:1] + (1,) + cotangent.type.shape[1:])
    if reduction == "sum":
        return cotangent
    if divisor is None:
        divisor = b.numel(scores, axes=tuple(axis for axis in range(scores.type.rank) if axis != 1), dtype=cotangent.type.dtype)
    return b.div(cotangent, divisor)


@register_op("nn.nll", traits={"composite"}, reduction="mean", ignore_index=-100)
def nll_shape(log_probs: TensorType, labels: TensorType, *weight: TensorType, reduction: str, ignore_index: int) -> TensorType:
    """Negative log-likelihood of ``(N, C, d...)`` log-probabilities at ``(N, d...)`` integer labels; optional ``(C,)`` weight."""
    per_sample = _class_loss_shape("nn.nll", log_probs, labels, weight, probabilities=False)
    return _reduced_loss_type("nn.nll", per_sample, reduction)


@register_decomposition("nn.nll")
def nll_decomposition(b: "Builder", log_probs: "Value", labels: "Value", *weight: "Value", reduction: str, ignore_index: int) -> "Value":
    # loss_i = -w_{y_i} s_{i, y_i}, 0 where y_i = ignore_index
    targets, divisor = class_targets(b, log_probs, labels, weight, ignore_index, 0.0)
    return reduce_class_loss(b, b.neg(b.reduce_sum(b.mul(targets, log_probs), axes=(1,))), divisor, reduction)


def class_targets(
    b: "Builder", scores: "Value", target: "Value", weight: tuple["Value", ...] | list["Value"], ignore_index: int, smoothing: float
) -> tuple["Value", "Value | None"]:
    """``q`` in the scores' shape, and the divisor of the mean (``None``: the number of samples)."""
    classes = scores.type.shape[1]
    class_weight = b.reshape(weight[0], shape=(classes,) + (1,) * (scores.type.rank - 2)) if weight else None
    if target.type.dtype.is_float:
        targets = _smoothed(b, target, smoothing, classes)
        return (targets if class_weight is None else b.mul(targets, class_weight)), None
    return _label_targets(b, scores, target, class_weight, ignore_index, smoothing)


def _label_targets(
    b: "Builder", scores: "Value", labels: "Value", class_weight: "Value | None", ignore_index: int, smoothing: float
) -> tuple["Value", "Value"]:
    one_hot = class_axis_second(b, b.one_hot(labels, num_classes=scores.type.shape[1], dtype=scores.type.dtype))
    keep = b.cast(b.not_equal(labels, b.constant(ignore_index, labels.type.dtype)), dtype=scores.type.dtype)
    keep = b.reshape(keep, shape=labels.type.shape[:1] + (1,) + labels.type.shape[1:])
    targets = _smoothed(b, one_hot, smoothing, scores.type.shape[1])
    if class_weight is None:
        return b.mul(targets, keep), b.reduce_sum(keep)
    # the divisor: sum_i keep_i w_{y_i}
    sample_weight = b.mul(keep, b.reduce_sum(b.mul(one_hot, class_weight), axes=(1,), keepdims=True))
    return b.mul(b.mul(targets, class_weight), keep), b.reduce_sum(sample_weight)


def _smoothed(b: "Builder", targets: "Value", smoothing: float, classes: int) -> "Value":
    # t (1 - eps) + eps / C
    if not smoothing:
        return targets
    return b.add(b.mul(targets, b.scalar_like(1 - smoothing, targets)), b.scalar_like(smoothing / classes, targets))


def class_axis_second(b: "Builder", one_hot: "Value") -> "Value":
    """``(N, d1, ..., C) -> (N, C, d1, ...)``: PyTorch's class axis is 1."""
    rank = one_hot.type.rank
    return one_hot if rank == 2 else b.transpose(one_hot, perm=(0, rank - 1) + tuple(range(1, rank - 1)))


def reduce_class_loss(b: "Builder", per_sample: "Value", divisor: "Value | None", reduction: str) -> "Value":
    if reduction == "mean" and divisor is not None:
        return b.div(b.reduce_sum(per_sample), divisor)
    return reduce_loss(b, per_sample, reduction)


# --- regression losses on d = prediction - target ----------------------------------------------


def _regression_shape(op: str):
    def shape(prediction: TensorType, target: TensorType, *, reduction: str, **options: float) -> TensorType:
        if prediction.shape != target.shape or prediction.dtype != target.dtype or not prediction.dtype.is_float:
            raise ShapeError(f"{op} needs float prediction and target of one type, got {prediction} and {target}")
        for name, value in options.items():
            if value < 0:
                raise ShapeError(f"{op}: {name} must be >= 0, got {value}")
        return _reduced_loss_type(op, prediction, reduction)

    return shape


register_op("nn.mse", traits={"composite"}, reduction="mean")(_regression_shape("nn.mse"))
register_op("nn.l1", traits={"composite"}, reduction="mean")(_regression_shape("nn.l1"))
register_op("nn.smooth_l1", traits={"composite"}, reduction="mean", beta=1.0)(_regression_shape("nn.smooth_l1"))
register_op("nn.huber", traits={"composite"}, reduction="mean", delta=1.0)(_regression_shape("nn.huber"))


def absolute(b: "Builder", x: "Value") -> "Value":
    # |x| = max(x, -x)
    return b.maximum(x, b.neg(x))


def _smooth_l1(b: "Builder", d: "Value", beta: float) -> "Value":
    # |d| < beta: 0.5 d^2 / beta, else |d| - 0.5 beta   (beta = 0: |d|)
    z = absolute(b, d)
    if beta == 0:
        return z
    quadratic = b.div(b.mul(b.mul(b.scalar_like(0.5, z), z), z), b.scalar_like(beta, z))
    return b.where(b.less(z, b.scalar_like(beta, z)), quadratic, b.sub(z, b.scalar_like(0.5 * beta, z)))


def _huber(b: "Builder", d: "Value", delta: float) -> "Value":
    # |d| < delta: 0.5 d^2, else delta (|d| - 0.5 delta)
    z = absolute(b, d)
    linear = b.mul(b.scalar_like(delta, z), b.sub(z, b.scalar_like(0.5 * delta, z)))
    return b.where(b.less(z, b.scalar_like(delta, z)), b.mul(b.mul(b.scalar_like(0.5, z), z), z), linear)


REGRESSION_LOSSES = {
    "nn.mse": lambda b, d: b.mul(d, d),  # d^2
    "nn.l1": absolute,  # |d|
    "nn.smooth_l1": _smooth_l1,
    "nn.huber": _huber,
}
"""Per-element loss of ``d = prediction - target``; the options (``beta``, ``delta``) follow ``d``."""


def _regression_decomposition(op: str):
    def decomposition(b: "Builder", prediction: "Value", target: "Value", *, reduction: str, **options: float) -> "Value":
        return reduce_loss(b, REGRESSION_LOSSES[op](b, b.sub(prediction, target), *options.values()), reduction)

    return decomposition


for _name in REGRESSION_LOSSES:
    register_decomposition(_name)(_regression_decomposition(_name))


# --- binary cross-entropy with logits ------------------------------------------------------------


@register_op("nn.bce_with_logits", traits={"composite"}, reduction="mean")
def bce_with_logits_shape(logits: TensorType, target: TensorType, *pos_weight: TensorType, reduction: str) -> TensorType:
    """Sigmoid binary cross-entropy of logits against targets in [0, 1]; optional ``pos_weight`` broadcast to the logits."""
    if logits != target or not logits.dtype.is_float:
        raise ShapeError(f"nn.bce_with_logits needs float logits and targets of one type, got {logits} and {target}")
    if len(pos_weight) > 1:
        raise ShapeError(f"nn.bce_with_logits takes one optional pos_weight, got {len(pos_weight)}")
    if pos_weight and not _broadcasts_to(pos_weight[0], logits):
        raise ShapeError(f"nn.bce_with_logits: pos_weight {pos_weight[0]} must broadcast to the logits {logits}")
    return _reduced_loss_type("nn.bce_with_logits", logits, reduction)


def _broadcasts_to(small: TensorType, big: TensorType) -> bool:
    try:
        return small.dtype == big.dtype and broadcast_shapes(small.shape, big.shape) == big.shape
    except ShapeError:
        return False


@register_decomposition("nn.bce_with_logits")
def bce_with_logits_decomposition(b: "Builder", logits: "Value", target: "Value", *pos_weight: "Value", reduction: str) -> "Value":
    # loss = (1 - t) x - lw log_sigmoid(x),  lw = 1 + (pos_weight - 1) t
    weighted = b.mul(log_sigmoid(b, logits), positive_weight(b, target, pos_weight)) if pos_weight else log_sigmoid(b, logits)
    return reduce_loss(b, b.sub(b.mul(b.sub(b.scalar_like(1.0, target), target), logits), weighted), reduction)


def log_sigmoid(b: "Builder", x: "Value") -> "Value":
    # log sigmoid(x) = min(x, 0) - log(1 + exp(-|x|)): no overflow for large |x|
    softplus = b.log(b.add(b.scalar_like(1.0, x), b.exp(b.neg(absolute(b, x)))))
    return b.sub(b.minimum(x, b.scalar_like(0.0, x)), softplus)


def positive_weight(b: "Builder", target: "Value", pos_weight: tuple["Value", ...] | list["Value"]) -> "Value":
    # lw = (pos_weight - 1) t + 1
    weight = pos_weight[0]
    return b.add(b.mul(b.sub(weight, b.scalar_like(1.0, weight)), target), b.scalar_like(1.0, target))
