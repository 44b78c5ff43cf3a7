"""NumPy kernels of the loss composites: one pass each, no one-hot matrices.

The class losses gather ``s[i, y_i]`` with ``take_along_axis`` and check the
labels (a label outside ``[0, C)`` that is not ``ignore_index`` is an error
naming it, as in PyTorch, where the decomposition would silently count it 0).
"""

from __future__ import annotations

import numpy as np

from kiln.backends.base import is_host_array
from kiln.backends.numpy.lowering import NUMPY, log_softmax
from kiln.compiler.errors import InputError


def _reduce(per_element, reduction: str):
    if reduction == "none":
        return per_element
    return np.mean(per_element) if reduction == "mean" else np.sum(per_element)


def _reduce_class_loss(per_sample, divisor, reduction: str):
    if reduction == "mean" and divisor is not None:
        return np.sum(per_sample) / divisor
    return _reduce(per_sample, reduction)


def _class_weight(weight, rank: int):
    """A ``(C,)`` weight shaped to broadcast over ``(N, C, d...)`` scores."""
    return weight.reshape(weight.shape + (1,) * (rank - 2))


def _label_loss(op: str, scores, labels, weight, ignore_index: int, smoothing: float):
    """``-sum_c q_ic s_ic`` per sample for integer labels, and the mean's divisor ``sum_i keep_i w_{y_i}``."""
    classes = scores.shape[1]
    plain = _plain_labels(labels, weight, smoothing, ignore_index, classes)
    if plain is not None:
        picked = scores[plain]
        return np.negative(picked, out=picked), scores.dtype.type(labels.size)
    keep = labels != ignore_index
    check_labels(op, labels, keep, classes, ignore_index)
    safe = np.where(keep, labels, 0)
    picked = np.take_along_axis(scores, np.expand_dims(safe, 1), axis=1).squeeze(1)
    sample_weight = keep.astype(scores.dtype) if weight is None else np.where(keep, weight[safe], scores.dtype.type(0))
    per_sample = -(picked * sample_weight)
    if smoothing:
        weighted = scores if weight is None else scores * _class_weight(weight, scores.ndim)
        smooth = -np.sum(weighted, axis=1) * keep
        per_sample = (1 - smoothing) * per_sample + (smoothing / classes) * smooth
    return per_sample, np.sum(sample_weight)


def _all_valid(labels, classes: int, ignore_index: int) -> bool:
    """Every label is a class in ``[0, C)`` and none is ``ignore_index``: two reductions instead of the masks.

    Host arrays only (this module is re-bound to CuPy, where the check would wait for the device).
    """
    if not is_host_array(labels) or labels.size == 0 or 0 <= ignore_index < classes:
        return False
    return 0 <= np.minimum.reduce(labels, axis=None) and np.maximum.reduce(labels, axis=None) < classes


class LabelOutOfRangeError(InputError, IndexError):
    """A class label outside ``[0, C)``: also an ``IndexError``, as PyTorch's ``Target 3 is out of bounds.``"""


def check_labels(op: str, labels, keep, classes: int, ignore_index: int) -> None:
    bad = keep & ((labels < 0) | (labels >= classes))
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        raise LabelOutOfRangeError(
            f"{op}: Target {labels[position]} is out of bounds: label {labels[position]} at {position} is outside "
            f"[0, {classes}) and is not ignore_index ({ignore_index}); labels are class indices (pass ignore_index= for padding)"
        )


def _probability_loss(log_probs, target, weight, smoothing: float):
    # -sum_c log_p_c (t_c (1 - eps) + eps / C) w_c, in PyTorch's order
    if smoothing:
        target = target * (1 - smoothing) + smoothing / log_probs.shape[1]
    product = log_probs * target
    if weight is not None:
        product = product * _class_weight(weight, log_probs.ndim)
    return -np.sum(product, axis=1)


@NUMPY.register("nn.cross_entropy")
def cross_entropy(logits, target, weight=None, *, reduction: str, ignore_index: int = -100, label_smoothing: float = 0.0):
    # loss_i = logsumexp(x_i) - x_i[y_i]  (plus the label-smoothing term)
    return _cross_entropy_of(log_softmax(logits, axis=1), target, weight, reduction, ignore_index, label_smoothing)


@NUMPY.register("nn.cross_entropy_grad")
def cross_entropy_grad(logits, target, cotangent, weight=None, *, reduction: str, ignore_index: int = -100,
                       label_smoothing: float = 0.0):
    return cross_entropy_grad_into(logits, target, cotangent, weight, out=np.empty_like(logits), reduction=reduction,
                                   ignore_index=ignore_index, label_smoothing=label_smoothing)


def cross_entropy_grad_into(logits, target, cotangent, weight=None, *, out, reduction: str, ignore_index: int = -100,
                            label_smoothing: float = 0.0):
    plain = _plain_labels(target, weight, label_smoothing, ignore_index, logits.shape[1])
    _gradient_into(out, _exp_shifted_into(logits, out)[1], target, cotangent, weight, reduction, ignore_index, label_smoothing, plain)
    return out


def softmax_cross_entropy_grad_into(logits, target, cotangent, weight=None, *, out, reduction: str, ignore_index: int = -100,
                                    label_smoothing: float = 0.0):
    """``nn.cross_entropy``'s loss (returned) and ``nn.cross_entropy_grad`` into ``out``, sharing max, exp and sum.

    The loss takes the cross-entropy kernel's operations in its order (equal results); plain labels (no weight,
    smoothing or ignored sample) gather ``x[y] - max`` instead of writing the whole log-softmax.
    """
    top, total = _exp_shifted_into(logits, out)
    plain = _plain_labels(target, weight, label_smoothing, ignore_index, logits.shape[1])
    if plain is not None:
        log_p = np.subtract(np.subtract(logits[plain], top[:, 0]), np.log(total[:, 0]))
        loss = _reduce_class_loss(np.negative(log_p, out=log_p), logits.dtype.type(target.size), reduction)
    else:
        loss = _cross_entropy_of(np.subtract(np.subtract(logits, top), np.log(total)), target, weight, reduction, ignore_index,
                                 label_smoothing)
    _gradient_into(out, total, target, cotangent, weight, reduction, ignore_index, label_smoothing, plain)
    return loss


def _plain_labels(target, weight, smoothing: float, ignore_index: int, classes: int):
    """For integer labels all in ``[0, C)`` and no weight or smoothing, the index of ``x[n, y_n, d...]``; else ``None``."""
    if weight is not None or smoothing or target.dtype.kind == "f" or not _all_valid(target, classes, ignore_index):
        return None
    if target.ndim == 1:
        return np.arange(len(target)), target
    grids = np.ogrid[tuple(slice(size) for size in target.shape)]
    return grids[0], target, *grids[1:]


def _exp_shifted_into(logits, out):
    """``exp(x - max)`` over the class axis 1 into ``out``; returns the max and the sum (kept dims)."""
    top = np.maximum.reduce(logits, axis=1, keepdims=True)
    np.exp(np.subtract(logits, top, out=out), out=out)
    return top, np.add.reduce(out, axis=1, keepdims=True)


def _gradient_into(out, total, target, cotangent, weight, reduction: str, ignore_index: int, smoothing: float, plain) -> None:
    """``out = exp(x - max)`` becomes ``(softmax(x) sum_c q_c - q) scale``: plain labels subtract ``scale`` at ``y``."""
    if plain is not None:
        scale = _sample_scale(cotangent, target.shape, out.dtype.type(target.size), reduction)
        np.multiply(out, np.divide(scale, total), out=out)
        out[plain] -= scale[:, 0] if reduction == "none" else scale
        return
    targets, divisor = _class_targets(target, out.shape[1], out.dtype, weight, ignore_index, smoothing)
    count = divisor if divisor is not None else out.dtype.type(out.size // out.shape[1])
    scale = _sample_scale(cotangent, out.shape[:1] + out.shape[2:], count, reduction)
    np.multiply(out, np.divide(np.sum(targets, axis=1, keepdims=True), total), out=out)
    np.multiply(np.subtract(out, targets, out=out), scale, out=out)


def _sample_scale(cotangent, sample_shape: tuple, count, reduction: str):
    """The reduced loss's cotangent as a factor on each ``(N, 1, d...)`` sample slice (``nn.per_sample_scale``)."""
    if reduction == "none":
        return cotangent.reshape(sample_shape[:1] + (1,) + sample_shape[1:])
    return cotangent if reduction == "sum" else cotangent / count


def _class_targets(target, classes: int, dtype, weight, ignore_index: int, smoothing: float):
    """``q`` in the scores' shape and the mean's divisor (``None``: the sample count), as ``nn.class_targets``."""
    if target.dtype.kind == "f":
        targets = target * (1 - smoothing) + smoothing / classes if smoothing else target
        return (targets if weight is None else targets * _class_weight(weight, target.ndim)), None
    keep = np.expand_dims(target != ignore_index, 1)
    check_labels("nn.cross_entropy", target, keep.squeeze(1), classes, ignore_index)
    one_hot = (np.expand_dims(target, 1) == np.arange(classes).reshape((classes,) + (1,) * (target.ndim - 1))).astype(dtype)
    targets = one_hot * (1 - smoothing) + smoothing / classes if smoothing else one_hot
    if weight is None:
        return targets * keep, dtype.type(np.sum(keep))
    class_weight = _class_weight(weight, one_hot.ndim)
    sample_weight = keep * np.sum(one_hot * class_weight, axis=1, keepdims=True)
    return targets * class_weight * keep, np.sum(sample_weight)


def _cross_entropy_of(log_probs, target, weight, reduction: str, ignore_index: int, label_smoothing: float):
    if target.dtype.kind == "f":
        return _reduce(_probability_loss(log_probs, target, weight, label_smoothing), reduction)
    per_sample, divisor = _label_loss("nn.cross_entropy", log_probs, target, weight, ignore_index, label_smoothing)
    return _reduce_class_loss(per_sample, divisor, reduction)


@NUMPY.register("nn.nll")
def nll(log_probs, labels, weight=None, *, reduction: str, ignore_index: int = -100):
    per_sample, divisor = _label_loss("nn.nll", log_probs, labels, weight, ignore_index, 0.0)
    return _reduce_class_loss(per_sample, divisor, reduction)


@NUMPY.register("nn.mse")
def mse(prediction, target, *, reduction: str):
    difference = prediction - target
    return _reduce(difference * difference, reduction)


@NUMPY.register("nn.l1")
def l1(prediction, target, *, reduction: str):
    return _reduce(np.abs(prediction - target), reduction)


@NUMPY.register("nn.smooth_l1")
def smooth_l1(prediction, target, *, reduction: str, beta: float):
    # |d| < beta: 0.5 d^2 / beta, else |d| - 0.5 beta
    z = np.abs(prediction - target)
    loss = z if beta == 0 else np.where(z < beta, 0.5 * z * z / beta, z - 0.5 * beta)
    return _reduce(loss, reduction)


@NUMPY.register("nn.huber")
def huber(prediction, target, *, reduction: str, delta: float):
    # |d| < delta: 0.5 d^2, else delta (|d| - 0.5 delta)
    z = np.abs(prediction - target)
    return _reduce(np.where(z < delta, 0.5 * z * z, delta * (z - 0.5 * delta)), reduction)


@NUMPY.register("nn.bce_with_logits")
def bce_with_logits(logits, target, pos_weight=None, *, reduction: str):
    # (1 - t) x - lw log_sigmoid(x),  lw = 1 + (pos_weight - 1) t
    log_sigmoid = np.minimum(logits, 0) - np.log1p(np.exp(-np.abs(logits)))
    if pos_weight is not None:
        log_sigmoid = log_sigmoid * ((pos_weight - 1) * target + 1)
    return _reduce((1 - target) * logits - log_sigmoid, reduction)
