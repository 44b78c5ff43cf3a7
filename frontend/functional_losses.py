"""Loss functions of ``F`` (``kiln.nn.functional``) with PyTorch's names, arguments and defaults.

The common ones are one ``nn.*`` composite op each in the traced graph; the
rest (``binary_cross_entropy``, ``kl_div``, the margin and embedding losses,
...) are written in primitives, with PyTorch's formulas operation for
operation, so values and gradients agree to rounding. ``weight`` and
``pos_weight`` are constants of the loss: arrays (or lists), cast to the
input's dtype, not traced tensors.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable

import numpy as np

from kiln.frontend.functional_activation import _log1p, _softplus, logsigmoid
from kiln.frontend.eager_values import eager_array
from kiln.frontend.functional_half import in_opmath
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.tensor_bitwise import TORCH_NAMES
from kiln.frontend.torch_dtypes import promote_types
from kiln.compiler.errors import TraceError
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.trace import located_error
from kiln.frontend.warn_once import warn_at_user_line
from kiln.frontend.autocast import autocasts

__all__ = [
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cosine_embedding_loss", "cross_entropy", "gaussian_nll_loss",
    "hinge_embedding_loss", "huber_loss", "kl_div", "l1_loss", "margin_ranking_loss", "mse_loss", "multi_margin_loss",
    "multilabel_soft_margin_loss", "nll_loss", "poisson_nll_loss", "smooth_l1_loss", "soft_margin_loss", "triplet_margin_loss",
]


def _legacy_reduction(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """PyTorch's deprecated ``size_average``/``reduce`` keywords (``F.nll_loss(output, target, size_average=False)``, as
    older pytorch/examples write it) folded into ``reduction`` as PyTorch folds them, with its warning: ``reduce=False``
    gives "none", else ``size_average=False`` "sum", else "mean"."""

    @functools.wraps(function)
    def with_legacy_arguments(*args: Any, size_average: bool | None = None, reduce: bool | None = None, **kwargs: Any) -> Tensor:
        if size_average is not None or reduce is not None:
            reduction = "none" if reduce is False else "sum" if size_average is False else "mean"
            warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.", UserWarning,
                          stacklevel=2)
            kwargs["reduction"] = reduction
        return function(*args, **kwargs)

    return with_legacy_arguments


@autocasts("cross_entropy_loss")
@_legacy_reduction
def cross_entropy(
    input: Tensor, target: Tensor, weight: Any = None, *, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0
) -> Tensor:
    """Softmax cross-entropy of ``(N, C)`` or ``(N, C, d1, ...)`` logits.

    ``target`` holds integer class indices ``(N, d1, ...)`` (those equal to
    ``ignore_index`` count for nothing, in the mean's divisor too) or class
    probabilities shaped like ``input``. ``weight`` is an optional ``(C,)``
    per-class weight; ``label_smoothing`` mixes the target with the uniform
    distribution, as ``torch.nn.functional.cross_entropy``.
    """
    weights = _constants("cross_entropy", input, weight=weight)
    return apply("nn.cross_entropy", input, target, *weights, reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)


@autocasts("nll_loss")
@_legacy_reduction
def nll_loss(input: Tensor, target: Tensor, weight: Any = None, *, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of ``(N, C, d...)`` log-probabilities at ``(N, d...)`` integer labels."""
    weights = _constants("nll_loss", input, weight=weight)
    return apply("nn.nll", input, target, *weights, reduction=reduction, ignore_index=ignore_index)


@autocasts("mse_loss")
@_legacy_reduction
def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error ``(input - target)^2``."""
    input, target = _broadcast_as_torch("mse_loss", input, target)
    return apply("nn.mse", input, target, reduction=reduction)


@autocasts("l1_loss")
@_legacy_reduction
def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error ``|input - target|``."""
    input, target = _broadcast_as_torch("l1_loss", input, target)
    return apply("nn.l1", input, target, reduction=reduction)


@autocasts("smooth_l1_loss")
@_legacy_reduction
def smooth_l1_loss(input: Tensor, target: Tensor, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = input - target``)."""
    input, target = _broadcast_as_torch("smooth_l1_loss", input, target)
    return apply("nn.smooth_l1", input, target, reduction=reduction, beta=float(beta))


@autocasts("huber_loss")
def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)`` (``d = input - target``)."""
    input, target = _broadcast_as_torch("huber_loss", input, target)
    return apply("nn.huber", input, target, reduction=reduction, delta=float(delta))


@autocasts("binary_cross_entropy_with_logits")
@_legacy_reduction
def binary_cross_entropy_with_logits(
    input: Tensor, target: Tensor, weight: Any = None, *, reduction: str = "mean", pos_weight: Any = None
) -> Tensor:
    """Sigmoid cross-entropy of logits against targets in [0, 1].

    ``pos_weight`` (broadcast over the last dims, usually ``(C,)``) weighs the
    positive term; ``weight`` rescales each element's loss before the reduction.
    """
    _same_shape("binary_cross_entropy_with_logits", input, target)
    if _float_pair_of_two_dtypes(input, target):
        return _bce_with_logits_in_target_dtype(input, target, weight, reduction, pos_weight)
    pos_weights = _constants("binary_cross_entropy_with_logits", input, pos_weight=pos_weight)
    if weight is None:
        return apply("nn.bce_with_logits", input, target, *pos_weights, reduction=reduction)
    if reduction not in ("mean", "sum", "none"):
        raise located_error(f"binary_cross_entropy_with_logits: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    (weight,) = _constants("binary_cross_entropy_with_logits", input, weight=weight)
    loss = apply("nn.bce_with_logits", input, target, *pos_weights, reduction="none") * weight
    return loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()


def _float_pair_of_two_dtypes(input: Any, target: Any) -> bool:
    return isinstance(input, Tensor) and isinstance(target, Tensor) and input.dtype != target.dtype and \
        input.dtype.is_float and target.dtype.is_float


def _bce_with_logits_in_target_dtype(input: Tensor, target: Tensor, weight: Any, reduction: str, pos_weight: Any) -> Tensor:
    """PyTorch's loss for logits and targets of two float dtypes (float64 logits against NCF's ``label.float()``): its
    kernel writes ``(1 - target).mul_(input).sub_(log_sigmoid(input))`` in place, so the loss is in the target's dtype,
    while its backward computes ``(sigmoid(input) - target) * grad / n`` in the logits' dtype. Here the loss is
    computed in the wider dtype and rounded to the target's once at the end: the value agrees with PyTorch's to the
    target dtype's precision (PyTorch rounds each element and sums in it), the gradient exactly."""
    wide = promote_types(input.dtype, target.dtype)
    loss = binary_cross_entropy_with_logits(input.to(wide), target.to(wide), weight, reduction=reduction, pos_weight=pos_weight)
    return loss.to(target.dtype)


# Losses written in primitives ---------------------------------------------------------

TORCH_EPSILON = float(np.float32(1e-12))
"""The ``EPSILON`` of PyTorch's loss kernels (BCE's backward, the cosine embedding loss): a C++ ``float``."""


@autocasts("binary_cross_entropy")
@_legacy_reduction
def binary_cross_entropy(input: Tensor, target: Tensor, weight: Any = None, reduction: str = "mean") -> Tensor:
    """``-w (t log(x) + (1 - t) log(1 - x))`` for probabilities ``x`` in [0, 1], each log clamped at -100, as PyTorch.

    The gradient w.r.t. ``input`` is PyTorch's hand-written one, ``w (x - t) / max(x (1 - x), 1e-12)``: finite and
    steep (not 0) at ``x`` exactly 0 or 1, where a saturated sigmoid lands. The gradient w.r.t. ``target`` is the
    derivative of the clamped loss (PyTorch's is the unclamped ``-logit(x)``, infinite at 0 and 1). ``weight``
    broadcasts to the input. Eager inputs outside [0, 1] (NaN too) are refused as PyTorch's; traced ones give NaN.
    """
    _check_probabilities(input)
    _same_shape("binary_cross_entropy", input, target)
    _same_float_dtype("binary_cross_entropy", input, target)
    _check_reduction("binary_cross_entropy", reduction)
    (weight,) = _constants("binary_cross_entropy", input, weight=weight) or [None]
    x = input.detach()  # the value's own slope is replaced by PyTorch's below
    above_0, below_1 = x > 0, x < 1  # the logs see 1 where they would be -inf, so even their discarded gradients stay finite
    log_x = _where(above_0, apply("tensor.maximum", _where(above_0, x, 1.0).log(), -100.0), -100.0)
    log_1mx = _where(below_1, apply("tensor.maximum", _log1p(-_where(below_1, x, 0.0)), -100.0), -100.0)  # Goldberg's log1p holds for u > -1
    loss = (target - 1.0) * log_1mx - target * log_x
    slope = (x - target) / apply("tensor.maximum", (1.0 - x) * x, TORCH_EPSILON)
    loss = loss + _zero_with_unit_slope(input) * slope
    return _reduce(loss if weight is None else loss * weight, reduction)


class ProbabilityRangeError(TraceError, RuntimeError):
    """``binary_cross_entropy`` given values outside [0, 1] (torch's ``RuntimeError``)."""


def _check_probabilities(input: Tensor) -> None:  # noqa: A002  (torch's name)
    """PyTorch's check that BCE's input holds probabilities, where the values are known now (an eager tensor): logits
    given by mistake (BCE where ``binary_cross_entropy_with_logits`` was meant) otherwise give a NaN loss."""
    values = eager_array(input)
    if values is not None and not np.all((values >= 0) & (values <= 1)):
        raise located(ProbabilityRangeError, "all elements of input should be between 0 and 1 (binary_cross_entropy "
                                             "takes probabilities; for logits use binary_cross_entropy_with_logits)")


@autocasts("kl_div")
@_legacy_reduction
def kl_div(input: Tensor, target: Tensor, reduction: str = "mean", log_target: bool = False) -> Tensor:
    """Pointwise KL divergence of log-probabilities ``input`` from ``target``: ``t (log t - input)`` (0 where ``t`` is 0,
    as ``xlogy``), or ``exp(t) (t - input)`` with ``log_target``. ``'batchmean'`` divides the sum by the batch size,
    which is the KL divergence proper; ``'mean'`` divides by the element count, as PyTorch. At a zero target the
    ``t log t`` term has slope 0 (PyTorch's ``xlogy`` gradient is NaN there)."""
    _check_reduction("kl_div", reduction, ("mean", "batchmean", "sum", "none"))
    if log_target:
        loss = target.exp() * (target - input)
    else:
        zero = target.eq(0.0)
        loss = _where(zero, 0.0, target * _where(zero, 1.0, target).log()) - target * input
    if reduction == "batchmean":
        return loss.sum() / _dim_size(input, 0) if input.ndim else loss.sum()
    return _reduce(loss, reduction)


@autocasts("poisson_nll_loss")
@_legacy_reduction
def poisson_nll_loss(
    input: Tensor, target: Tensor, log_input: bool = True, full: bool = False, eps: float = 1e-8, reduction: str = "mean"
) -> Tensor:
    """Poisson negative log-likelihood: ``exp(input) - t input`` for a log-rate, ``input - t log(input + eps)`` for a rate;
    ``full`` adds Stirling's ``t log t - t + log(2 pi t) / 2`` where ``t > 1`` (elsewhere it adds nothing, and no
    gradient: PyTorch's is NaN at ``t = 0``)."""
    _check_reduction("poisson_nll_loss", reduction)
    loss = input.exp() - target * input if log_input else input - target * (input + eps).log()
    if full:
        above_1 = target > 1
        t = _where(above_1, target, 2.0)
        stirling = t * t.log() - t + 0.5 * (t * (2 * math.pi)).log()
        loss = loss + _where(above_1, stirling, 0.0)
    return _reduce(loss, reduction)


def gaussian_nll_loss(input: Tensor, target: Tensor, var: Tensor | float, full: bool = False, eps: float = 1e-6, reduction: str = "mean") -> Tensor:
    """Gaussian negative log-likelihood ``(log var + (input - target)^2 / var) / 2`` (``+ log(2 pi) / 2`` with ``full``).

    ``var`` is ``input``'s shape, that shape without its last dim, or that shape with one dim of 1 (one variance
    shared along it); it must be non-negative (not checked on tensors; PyTorch raises). It is clamped at ``eps`` as
    PyTorch clamps it, outside autograd: below ``eps`` the value is ``eps`` but the gradient is the one at ``eps``
    passed straight to ``var``, not 0.
    """
    _check_reduction("gaussian_nll_loss", reduction)
    if not isinstance(var, Tensor):
        if var < 0:
            raise located_error(f"gaussian_nll_loss: var is {var}; it must be non-negative")
        var = max(float(var), eps)
    else:
        var = _clamp_below_keeping_gradient(_variance_like(input, var), eps)
    difference = input - target
    log_var = var.log() if isinstance(var, Tensor) else math.log(var)
    loss = 0.5 * (log_var + difference * difference / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


@autocasts("margin_ranking_loss")
@_legacy_reduction
def margin_ranking_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0.0, reduction: str = "mean") -> Tensor:
    """``max(0, -target (input1 - input2) + margin)``: ``target`` 1 asks ``input1`` to rank above ``input2``, -1 below."""
    _check_reduction("margin_ranking_loss", reduction)
    if not input1.ndim == input2.ndim == target.ndim:
        raise located_error(f"margin_ranking_loss: input1 {input1.type}, input2 {input2.type} and target {target.type} need the same rank")
    return _reduce(_clamp_at_0(-target * (input1 - input2) + margin), reduction)


@autocasts("hinge_embedding_loss")
@_legacy_reduction
def hinge_embedding_loss(input: Tensor, target: Tensor, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """``input`` where ``target`` is 1, ``max(0, margin - input)`` where it is -1 (``input`` is usually a distance)."""
    _check_reduction("hinge_embedding_loss", reduction)
    below_margin = _where(target.ne(1), _clamp_at_0(margin - input), 0.0)
    return _reduce(below_margin + _where(target.ne(-1), input, 0.0), reduction)


@autocasts("soft_margin_loss")
@_legacy_reduction
def soft_margin_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Two-class logistic loss ``log(1 + exp(-target input))`` for targets of +-1, finite and accurate for any ``input``
    (PyTorch's overflows to inf, with a NaN gradient, past ``-target input`` = 709 in float64, 88 in float32)."""
    _same_shape("soft_margin_loss", input, target)
    _check_reduction("soft_margin_loss", reduction)
    return _reduce(_softplus(-input * target), reduction)


@_legacy_reduction
def multilabel_soft_margin_loss(input: Tensor, target: Tensor, weight: Any = None, reduction: str = "mean") -> Tensor:
    """Per-class logistic loss of ``(N, C)`` logits against 0/1 targets, weighted per class by ``weight`` (``(C,)``) and
    averaged over the classes: one loss per sample."""
    _same_shape("multilabel_soft_margin_loss", input, target)
    _check_reduction("multilabel_soft_margin_loss", reduction)
    loss = -(target * logsigmoid(input) + (1.0 - target) * logsigmoid(-input))
    (weight,) = _constants("multilabel_soft_margin_loss", input, weight=weight) or [None]
    if weight is not None:
        loss = loss * weight
    return _reduce(loss.sum(-1) / _dim_size(input, -1), reduction)


@autocasts("cosine_embedding_loss")
@_legacy_reduction
def cosine_embedding_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0.0, reduction: str = "mean") -> Tensor:
    """``1 - cos(x1, x2)`` where ``target`` is 1, ``max(0, cos(x1, x2) - margin)`` where it is -1; the cosine is over the
    last dim of ``(N, D)`` (or ``(D,)``) inputs, with PyTorch's 1e-12 added to each squared norm."""
    _check_reduction("cosine_embedding_loss", reduction)
    if input1.shape != input2.shape or target.ndim != input1.ndim - 1 or target.ndim > 1:
        raise located_error(
            f"cosine_embedding_loss: needs inputs of one shape (N, D) or (D,) and targets (N,) or (); got {input1.type}, {input2.type}, {target.type}"
        )
    squared_norm1 = (input1 * input1).sum(-1) + TORCH_EPSILON
    squared_norm2 = (input2 * input2).sum(-1) + TORCH_EPSILON
    cosine = (input1 * input2).sum(-1) / (squared_norm1 * squared_norm2).sqrt()
    similar = _where(target.eq(1), 1.0 - cosine, 0.0)
    return _reduce(similar + _where(target.eq(-1), _clamp_at_0(cosine - margin), 0.0), reduction)


@autocasts("triplet_margin_loss")
@_legacy_reduction
def triplet_margin_loss(
    anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """``max(0, margin + d(anchor, positive) - d(anchor, negative))`` with PyTorch's pairwise distance
    ``||x1 - x2 + eps||_p`` over the last dim; ``swap`` uses ``d(positive, negative)`` when it is the smaller."""
    _check_reduction("triplet_margin_loss", reduction)
    if margin <= 0:
        raise located_error(f"triplet_margin_loss: margin must be greater than 0, got {margin}")
    if not p > 0:
        raise located_error(f"triplet_margin_loss: the norm's p must be positive (or inf), got {p}")
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise located_error(f"triplet_margin_loss: anchor {anchor.type}, positive {positive.type} and negative {negative.type} need the same rank")
    to_positive = _pairwise_distance(anchor, positive, p, eps)
    to_negative = _pairwise_distance(anchor, negative, p, eps)
    if swap:
        to_negative = apply("tensor.minimum", to_negative, _pairwise_distance(positive, negative, p, eps))
    return _reduce(_clamp_at_0(margin + to_positive - to_negative), reduction)


@autocasts("multi_margin_loss")
@_legacy_reduction
def multi_margin_loss(
    input: Tensor, target: Tensor, p: int = 1, margin: float = 1.0, weight: Any = None, reduction: str = "mean"
) -> Tensor:
    """Multi-class hinge loss of ``(N, C)`` scores at integer labels ``(N,)``:
    ``sum_{j != y} max(0, margin - x_y + x_j)^p / C``, times ``weight[y]``; ``p`` is 1 or 2."""
    _check_reduction("multi_margin_loss", reduction)
    if p not in (1, 2):
        raise located_error(f"multi_margin_loss: only p == 1 and p == 2 are supported, got {p}")
    classes = input.shape[-1] if input.ndim else None
    if input.ndim not in (1, 2) or target.ndim != input.ndim - 1 or not isinstance(classes, int) or not target.dtype.is_int:
        raise located_error(
            f"multi_margin_loss: needs scores (N, C) or (C,) with a static C and integer labels (N,) or (); got {input.type} and {target.type}"
        )
    label = apply("tensor.one_hot", target, num_classes=classes, dtype="float32").to(input.dtype)  # exact; ONNX Runtime has no float64 OneHot
    scored = (input * label).sum(-1, keepdim=True)
    violation = apply("tensor.relu", (margin - scored) + input)  # slope 0 at 0, as PyTorch's ``z > 0``
    violation = violation if p == 1 else violation * violation
    loss = (violation * (1.0 - label)).sum(-1)
    (weight,) = _constants("multi_margin_loss", input, weight=weight) or [None]
    if weight is not None:
        loss = loss * (label * weight).sum(-1)
    return _reduce(loss / classes, reduction)


# Helpers of the losses written in primitives -------------------------------------------


def _where(condition: Tensor, input: Tensor | float, other: Tensor | float) -> Tensor:
    return apply("tensor.where", condition, input, other)


def _clamp_at_0(input: Tensor) -> Tensor:
    """``max(x, 0)`` with slope 1 at 0, PyTorch's ``clamp_min(x, 0)`` (``relu`` has slope 0 there)."""
    return apply("tensor.clip", input, min=0.0, max=None)


def _pairwise_distance(x1: Tensor, x2: Tensor, p: float, eps: float) -> Tensor:
    """PyTorch's ``pairwise_distance``: the ``p``-norm of ``x1 - x2 + eps`` over the last dim (a half difference's norm
    in float32, rounded once, as torch's norm kernel: its squares would overflow float16)."""
    return in_opmath(lambda difference: _norm_of_last_dim(difference, p), x1 - x2 + eps)


def _norm_of_last_dim(difference: Tensor, p: float) -> Tensor:
    if p == 2:
        return (difference * difference).sum(-1).sqrt()
    if p == 1:
        return difference.abs().sum(-1)
    if p == math.inf:
        return difference.abs().amax(-1)
    return ((difference.abs() ** float(p)).sum(-1)) ** (1.0 / p)


def _variance_like(input: Tensor, var: Tensor) -> Tensor:
    """``var`` shaped to broadcast against ``input`` as PyTorch's ``gaussian_nll_loss`` allows, or a trace error."""
    if var.shape == input.shape:
        return var
    if var.shape == input.shape[:-1]:
        return var.unsqueeze(-1)
    differing = [size for size, want in zip(var.shape, input.shape) if size != want]
    if var.ndim == input.ndim and differing == [1]:
        return var
    raise located_error(
        f"gaussian_nll_loss: var {var.type} fits neither input {input.type}, its shape without the last dim, nor that shape with one dim of 1"
    )


def _clamp_below_keeping_gradient(var: Tensor, low: float) -> Tensor:
    """``max(var, low)`` in value with slope 1 everywhere, as PyTorch's ``var.clamp_(min=eps)`` under ``no_grad``;
    ``var`` in ``[0, low)`` (PyTorch rejects negative variances) is where the slope is carried through."""
    return _where(var < low, low + _zero_with_unit_slope(var), var)


def _zero_with_unit_slope(input: Tensor) -> Tensor:
    """0 in value with slope exactly 1: ``x - stop_gradient(x)``. How a loss gets PyTorch's gradient where PyTorch's
    is not the derivative of its value (a hand-written backward, a clamp under ``no_grad``):
    ``value(stop_gradient(x)) + _zero_with_unit_slope(x) * slope``."""
    return input - input.detach()


def _dim_size(input: Tensor, axis: int) -> Tensor | int:
    """The size of ``axis``: an ``int``, or a scalar of the input's dtype read at run time for a symbolic dim."""
    size = input.shape[axis]
    return size if isinstance(size, int) else apply("tensor.numel", input, axes=(axis,), dtype=input.dtype)


def _check_reduction(function: str, reduction: str, allowed: tuple[str, ...] = ("mean", "sum", "none")) -> None:
    if reduction not in allowed:
        raise located_error(f"{function}: reduction must be one of {allowed}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    return loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()


def _constants(function: str, input: Tensor, **arrays: Any) -> list[np.ndarray | Tensor]:
    """The given optional weights in the input's dtype (an empty list when not given): arrays and eager tensors as
    arrays; a traced tensor (``pos_weight=torch.tensor([3.0])`` inside a compiled step) as its detached value. No
    gradient reaches a weight, as in PyTorch."""
    constants: list[np.ndarray | Tensor] = []
    for name, value in arrays.items():
        if value is None:
            continue
        if isinstance(value, Tensor):
            array = eager_array(value)
            if array is None:
                constants.append(value.detach().to(input.dtype))
                continue
            value = array
        constants.append(np.asarray(value, dtype=input.dtype.numpy))
    return constants


_BROADCAST_WARNING = ("Using a target size ({target}) that is different to the input size ({input}). This will likely lead "
                      "to incorrect results due to broadcasting. Please ensure they have the same size.")


def _broadcast_as_torch(function: str, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(input, target)`` broadcast together where their shapes differ, with PyTorch's warning at the user's line:
    torch's regression losses (mse, l1, smooth_l1, huber) broadcast, so a ``(N, 1)`` prediction against a ``(N,)``
    target scores all ``N x N`` pairs, a slip that published code trains with (attention-learn-to-route's critic
    baseline, ``F.mse_loss(v, c.detach())``); shapes that do not broadcast are an error naming the line."""
    if input.shape == target.shape:
        return input, target
    from kiln.frontend.torch_size import Size

    warn_at_user_line(_BROADCAST_WARNING.format(target=Size(target.shape), input=Size(input.shape)))
    shape = _broadcast_shape(function, input, target)
    return input.broadcast_to(shape), target.broadcast_to(shape)


def _broadcast_shape(function: str, input: Tensor, target: Tensor) -> tuple[Any, ...]:
    """The shape ``input`` and ``target`` broadcast to; an error naming the line where they do not."""
    from kiln.frontend.torch_more import broadcast_shapes

    try:
        return broadcast_shapes(input.shape, target.shape)
    except Exception:
        raise located_error(f"{function}: input {input.type} and target {target.type} differ in shape and do not "
                            f"broadcast") from None


def _same_shape(function: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        raise located_error(f"{function}: input {input.type} and target {target.type} differ in shape; reshape one to the other's shape")


def _same_float_dtype(function: str, input: Tensor, target: Any) -> None:
    """PyTorch's ``binary_cross_entropy`` kernel refuses a target tensor of another dtype than the input (a float32
    ``target.float()`` with float64 probabilities) rather than promoting: its error, and what to write instead."""
    dtype = getattr(target, "dtype", None)
    if isinstance(target, Tensor) and dtype != input.dtype:
        raise located_error(f"Found dtype {TORCH_NAMES.get(dtype, dtype)} but expected {TORCH_NAMES.get(input.dtype, input.dtype)} "
                            f"({function}: the target must have the input's dtype; cast it, e.g. target.to(input.dtype))")


