"""How ``MoreMethods``' NaN-aware statistics (``nanmedian``, ``nanquantile`` in ``frontend/tensor_more.py``) order
and pick: a stable sort with every NaN after the numbers (``_nan_last_order``), then a quantile of each row's numbers
alone (``_quantile_at``), NaN where a row has none."""

from __future__ import annotations

from typing import Any

from kiln.frontend.tensor_mixin_ops import _where


def _nan_last_order(x: Any, axis: int) -> tuple[Any, Any]:
    """The sorting order along ``axis`` with NaNs after every number, and the count of non-NaN elements."""
    missing = x.isnan()
    keys = _where(missing, 0.0, x.detach())
    order = _stable_by_flag(keys.argsort(axis, stable=True), missing.to(keys.dtype), axis)
    return order, (~missing).long().sum(axis)


def _stable_by_flag(order: Any, flag: Any, axis: int) -> Any:
    """``order`` re-sorted stably by ``flag`` (0 before 1): the NaNs moved behind the numbers, both in order."""
    moved = flag.take_along_dim(order, axis)
    return order.take_along_dim(moved.argsort(axis, stable=True), axis)


def _quantile_at(ordered: Any, valid: Any, level: float, interpolation: str) -> Any:
    """The ``level`` quantile of each row's first ``valid`` elements of ``ordered`` (sorted, NaNs last)."""
    rank = (valid.to(ordered.dtype) - 1.0).clamp(min=0.0) * level
    lower, upper = rank.floor(), rank.ceil()
    pick = {"lower": lower, "higher": upper, "nearest": rank.round()}.get(interpolation)
    if pick is not None:
        value = _gathered(ordered, pick)
    else:
        below, above = _gathered(ordered, lower), _gathered(ordered, upper)
        weight = (rank - lower) if interpolation == "linear" else 0.5
        value = below + (above - below) * weight
    return value  # NaN where the row has no number: its NaNs start at rank 0


def _gathered(ordered: Any, position: Any) -> Any:
    return ordered.take_along_dim(position.long().unsqueeze(-1), -1).squeeze(-1)


def _stack_levels(picks: list[Any]) -> Any:
    from kiln.frontend.functional_nn import stack

    return stack(picks, 0)
