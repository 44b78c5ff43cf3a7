"""torch's refusal of ``p.grad = g`` where ``g`` has another shape or dtype than ``p``: kiln stored it, and a later
optimizer step broke on it or broadcast it."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.types import DType
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.trace import called_from_user


class GradAssignmentError(KilnError, RuntimeError):
    """``p.grad = g`` with ``g`` of another shape or dtype than ``p`` (torch's ``RuntimeError``)."""


def check_assigned_grad(leaf: Any, grad: Any) -> None:
    """Raise torch's error where the user's code assigns ``leaf.grad`` a gradient of another shape or dtype (kiln's own
    assignments are not checked)."""
    mismatch = _mismatched_grad(leaf, grad)
    if mismatch and called_from_user(depth=3):
        raise located(GradAssignmentError, mismatch)


def _mismatched_grad(leaf: Any, grad: Any) -> str:
    """What differs between ``leaf`` and ``grad``, in torch's words; "" where they agree (or ``grad`` has neither a
    shape nor a dtype: None, a number)."""
    shape, dtype = getattr(grad, "shape", None), getattr(grad, "dtype", None)
    own = leaf._data
    if shape is not None and tuple(shape) != tuple(own.shape):
        return (f"attempting to assign a gradient of size '{list(shape)}' to a tensor of size '{list(own.shape)}'. "
                "Please ensure that the gradient and the tensor are the same size")
    if dtype is not None and np.dtype(getattr(dtype, "numpy", dtype)) != own.dtype:
        return (f"attempting to assign a gradient with dtype '{DType.of(dtype)}' to a tensor with dtype "
                f"'{DType.of(own.dtype)}': the gradient must match the tensor's dtype, as in PyTorch")
    return ""


__all__ = ["GradAssignmentError", "check_assigned_grad"]
