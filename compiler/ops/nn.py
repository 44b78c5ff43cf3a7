"""The ``nn`` dialect: composites with a decomposition into ``tensor`` primitives.

Backends may lower a composite directly (a fused softmax) or let ``decompose``
expand it; autodiff uses a direct VJP rule where one is registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType, format_shape, normalize_axis
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


@register_decomposition("nn.log_softmax")
def log_softmax_decomposition(b: "Builder", x: "Value", *, axis: int) -> "Value":
    # log_softmax(x) = (x - max) - log(sum(exp(x - max)))
    shifted = b.sub(x, b.reduce_max(x, axes=(axis,), keepdims=True))
    return b.sub(shifted, b.log(b.reduce_sum(b.exp(shifted), axes=(axis,), keepdims=True)))


def _reduced_loss_type(op: str, per_sample: TensorType, reduction: str) -> TensorType:
    if reduction not in REDUCTIONS:
        raise ShapeError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return per_sample if reduction == "none" else per_sample.with_shape(())


@register_op("nn.cross_entropy", traits={"composite"}, reduction="mean")
def cross_entropy_shape(logits: TensorType, labels: TensorType, *, reduction: str) -> TensorType:
    """Softmax cross-entropy of ``(N, C)`` logits against ``(N,)`` integer class labels."""
    if logits.rank != 2 or not logits.dtype.is_float:
        raise ShapeError(f"nn.cross_entropy needs float logits of shape (N, C), got {logits}")
    if not labels.dtype.is_int or labels.shape != logits.shape[:1]:
        raise ShapeError(
            f"nn.cross_entropy needs integer labels of shape {format_shape(logits.shape[:1])} "
            f"for logits {format_shape(logits.shape)}, got {labels}"
        )
    return _reduced_loss_type("nn.cross_entropy", logits.with_shape(logits.shape[:1]), reduction)


@register_decomposition("nn.cross_entropy")
def cross_entropy_decomposition(b: "Builder", logits: "Value", labels: "Value", *, reduction: str) -> "Value":
    # loss_i = -sum_c onehot(y_i)_c * log_softmax(x_i)_c
    targets = b.one_hot(labels, num_classes=logits.type.shape[1], dtype=logits.type.dtype)
    picked = b.reduce_sum(b.mul(targets, b.log_softmax(logits, axis=1)), axes=(1,))
    return reduce_loss(b, b.neg(picked), reduction)


@register_op("nn.mse", traits={"composite"}, reduction="mean")
def mse_shape(prediction: TensorType, target: TensorType, *, reduction: str) -> TensorType:
    if prediction.shape != target.shape or prediction.dtype != target.dtype:
        raise ShapeError(f"nn.mse needs prediction and target of one type, got {prediction} and {target}")
    return _reduced_loss_type("nn.mse", prediction, reduction)


@register_decomposition("nn.mse")
def mse_decomposition(b: "Builder", prediction: "Value", target: "Value", *, reduction: str) -> "Value":
    # mse = mean((p - t)^2)
    difference = b.sub(prediction, target)
    return reduce_loss(b, b.mul(difference, difference), reduction)


def reduce_loss(b: "Builder", per_element: "Value", reduction: str) -> "Value":
    """Apply a loss ``reduction`` (mean, sum or none) over every axis."""
    if reduction == "none":
        return per_element
    reduce = b.reduce_mean if reduction == "mean" else b.reduce_sum
    return reduce(per_element, axes=None)
