"""``F.pdist``, ``cdist`` (``torch.cdist``, exported at the top level as ``kiln.cdist``), and the losses
``F.triplet_margin_with_distance_loss`` and ``F.multilabel_margin_loss``, with PyTorch's semantics.

The distances are ``F.norm`` over differences, so their gradients are PyTorch's (0 at a zero distance): ``pdist``
takes the rows of the upper triangle with two constant gathers, ``cdist`` broadcasts ``(.., P, 1, M) - (.., 1, R, M)``.
``cdist`` always computes the differences: PyTorch's default switches to a matrix-product formula past 25 rows (the
same values up to rounding); ``compute_mode`` is accepted for its signature.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from kiln.frontend.functional_losses import _check_reduction, _clamp_at_0, _legacy_reduction, _reduce
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts


def _norm(difference: Tensor, p: float) -> Tensor:
    from kiln.frontend.functional import norm

    return norm(difference, p, -1)


# Distances -----------------------------------------------------------------------------------------------------------


def pdist(input: Tensor, p: float = 2.0) -> Tensor:
    """The ``p``-norm distances between the rows of ``(N, M)``, pairs ``i < j`` in row-major order: ``N (N - 1) / 2``."""
    if input.ndim != 2 or not isinstance(input.shape[0], int):
        raise located_error(f"pdist only supports 2D tensors with a static number of rows, got {input.type}")
    _check_p("pdist", p)
    first, second = np.triu_indices(input.shape[0], 1)
    rows = [apply("tensor.take", input, apply("tensor.constant", value=i.astype(np.int64)), axis=0) for i in (first, second)]
    return _norm(rows[0] - rows[1], p)


@autocasts("cdist")
def cdist(x1: Tensor, x2: Tensor, p: float = 2.0, compute_mode: str = "use_mm_for_euclid_dist_if_necessary") -> Tensor:
    """``torch.cdist``: the ``p``-norm distance of every row of ``x1 (.., P, M)`` to every row of ``x2 (.., R, M)``,
    ``(.., P, R)``; leading batch dims broadcast."""
    if x1.ndim < 2 or x2.ndim < 2 or x1.shape[-1] != x2.shape[-1]:
        raise located_error(f"cdist: X1 {x1.type} and X2 {x2.type} must be at least 2-D with the same last dim (columns)")
    if compute_mode not in ("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist"):
        raise located_error(f"cdist: {compute_mode!r} is not a valid value for compute_mode")
    _check_p("cdist", p)
    return _norm(x1.unsqueeze(-2) - x2.unsqueeze(-3), p)


def _check_p(function: str, p: float) -> None:
    if not p >= 0:
        raise located_error(f"{function} only supports non-negative p values, got {p}")


# Losses --------------------------------------------------------------------------------------------------------------


def triplet_margin_with_distance_loss(anchor: Tensor, positive: Tensor, negative: Tensor, *,
                                      distance_function: Callable[[Tensor, Tensor], Tensor] | None = None, margin: float = 1.0,
                                      swap: bool = False, reduction: str = "mean") -> Tensor:
    """``max(0, margin + d(anchor, positive) - d(anchor, negative))`` for any distance ``d`` (``F.pairwise_distance``
    by default); ``swap`` uses ``d(positive, negative)`` where it is the smaller."""
    _check_reduction("triplet_margin_with_distance_loss", reduction)
    if margin <= 0:
        raise located_error(f"triplet_margin_with_distance_loss: expected margin to be greater than 0, got {margin} instead")
    if distance_function is None:
        from kiln.frontend.functional import pairwise_distance as distance_function
    to_positive, to_negative = distance_function(anchor, positive), distance_function(anchor, negative)
    if swap:
        to_negative = apply("tensor.minimum", to_negative, distance_function(positive, negative))
    return _reduce(_clamp_at_0(margin + to_positive - to_negative), reduction)


@autocasts("multilabel_margin_loss")
@_legacy_reduction
def multilabel_margin_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Multi-label hinge loss of ``(N, C)`` (or ``(C,)``) scores: ``sum_j sum_{i not a label} max(0, 1 - (x[y_j] - x[i])) / C``
    over the labels ``y_j``, the entries of ``target`` before its first -1, as PyTorch's (a repeated label counts again)."""
    _check_reduction("multilabel_margin_loss", reduction)
    classes = input.shape[-1] if input.ndim else None
    if input.ndim not in (1, 2) or tuple(target.shape) != tuple(input.shape) or not isinstance(classes, int) or not target.dtype.is_int:
        raise located_error(f"multilabel_margin_loss: needs scores (N, C) or (C,) with a static C and integer targets of the same "
                            f"shape (labels, then -1), got {input.type} and {target.type}")
    labels = target.eq(-1).cumsum(-1).eq(0)  # (.., J): the entries before the first -1
    one_hot = apply("tensor.one_hot", apply("tensor.where", labels, target, 0), num_classes=classes, dtype="float32").to(input.dtype)
    one_hot = one_hot * labels.unsqueeze(-1).to(input.dtype)  # (.., J, C)
    labelled = one_hot.amax(-2)  # (.., C): 1 for each class among the labels
    scored = (one_hot * input.unsqueeze(-2)).sum(-1)  # (.., J): x[y_j]
    margin = 1.0 - scored.unsqueeze(-1) + input.unsqueeze(-2)
    hinge = apply("tensor.where", margin > 0, margin, 0.0)  # slope 0 at 0, as PyTorch's ``z > 0``
    loss = (hinge * (1.0 - labelled).unsqueeze(-2)).sum(-1)
    return _reduce((loss * labels.to(input.dtype)).sum(-1) / classes, reduction)


__all__: Sequence[str] = ["multilabel_margin_loss", "pdist", "triplet_margin_with_distance_loss"]
