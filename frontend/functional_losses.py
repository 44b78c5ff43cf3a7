"""Loss functions of ``F`` (``kiln.nn.functional``) with PyTorch's names, arguments and defaults.

Each is one ``nn.*`` composite op in the traced graph. ``weight`` and
``pos_weight`` are constants of the loss: arrays (or lists), cast to the
input's dtype, not traced tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import user_location

__all__ = [
    "binary_cross_entropy_with_logits", "cross_entropy", "huber_loss", "l1_loss", "mse_loss", "nll_loss", "smooth_l1_loss",
]


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


def nll_loss(input: Tensor, target: Tensor, weight: Any = None, *, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of ``(N, C, d...)`` log-probabilities at ``(N, d...)`` integer labels."""
    weights = _constants("nll_loss", input, weight=weight)
    return apply("nn.nll", input, target, *weights, reduction=reduction, ignore_index=ignore_index)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error ``(input - target)^2``."""
    _same_shape("mse_loss", input, target)
    return apply("nn.mse", input, target, reduction=reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error ``|input - target|``."""
    _same_shape("l1_loss", input, target)
    return apply("nn.l1", input, target, reduction=reduction)


def smooth_l1_loss(input: Tensor, target: Tensor, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta`` (``d = input - target``)."""
    _same_shape("smooth_l1_loss", input, target)
    return apply("nn.smooth_l1", input, target, reduction=reduction, beta=float(beta))


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)`` (``d = input - target``)."""
    _same_shape("huber_loss", input, target)
    return apply("nn.huber", input, target, reduction=reduction, delta=float(delta))


def binary_cross_entropy_with_logits(
    input: Tensor, target: Tensor, weight: Any = None, *, reduction: str = "mean", pos_weight: Any = None
) -> Tensor:
    """Sigmoid cross-entropy of logits against targets in [0, 1].

    ``pos_weight`` (broadcast over the last dims, usually ``(C,)``) weighs the
    positive term; ``weight`` rescales each element's loss before the reduction.
    """
    _same_shape("binary_cross_entropy_with_logits", input, target)
    pos_weights = _constants("binary_cross_entropy_with_logits", input, pos_weight=pos_weight)
    if weight is None:
        return apply("nn.bce_with_logits", input, target, *pos_weights, reduction=reduction)
    if reduction not in ("mean", "sum", "none"):
        raise _error(f"binary_cross_entropy_with_logits: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    (weight,) = _constants("binary_cross_entropy_with_logits", input, weight=weight)
    loss = apply("nn.bce_with_logits", input, target, *pos_weights, reduction="none") * weight
    return loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()


def _constants(function: str, input: Tensor, **arrays: Any) -> list[np.ndarray]:
    """The given optional weights as arrays of the input's dtype (an empty list when not given)."""
    constants = []
    for name, value in arrays.items():
        if value is None:
            continue
        if isinstance(value, Tensor):
            raise _error(f"{function}: {name} is a constant of the loss; pass an array (e.g. {name}.numpy()), not a traced tensor")
        constants.append(np.asarray(value, dtype=input.dtype.numpy))
    return constants


def _same_shape(function: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        raise _error(f"{function}: input {input.type} and target {target.type} differ in shape; reshape one (PyTorch would broadcast and warn)")


def _error(message: str) -> TraceError:
    """A trace error that names the user's line, like the ones ops raise."""
    location = user_location()
    return TraceError(f"{location.describe() if location else '<unknown>'}\n  {message}")
