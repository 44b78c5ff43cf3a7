"""PyTorch's warnings at the user's line: ``TORCH_WARN_ONCE`` (``warn_once``: a UserWarning the first time a process
reaches it, whatever the warnings filters, ``simplefilter("always")`` too; torch 2.13 warns so for its deprecated linear
algebra, ``torch.cholesky``, ``torch.triangular_solve``) and ``TORCH_WARN`` / ``warnings.warn`` (``warn_at_user_line``:
under the filters, once per user line by default)."""

from __future__ import annotations

import warnings
from typing import Any

from kiln.frontend.trace import user_location

_GIVEN: set[str] = set()
"""The messages this process has warned."""

CHOLESKY_DEPRECATED = (
    "torch.cholesky is deprecated in favor of torch.linalg.cholesky and will be removed in a future PyTorch release.\n"
    "L = torch.cholesky(A)\nshould be replaced with\nL = torch.linalg.cholesky(A)\nand\nU = torch.cholesky(A, upper=True)\n"
    "should be replaced with\nU = torch.linalg.cholesky(A).mH\nThis transform will produce equivalent results for all "
    "valid (symmetric positive definite) inputs.")
TRIANGULAR_SOLVE_DEPRECATED = (
    "torch.triangular_solve is deprecated in favor of torch.linalg.solve_triangularand will be removed in a future "
    "PyTorch release.\ntorch.linalg.solve_triangular has its arguments reversed and does not return a copy of one of "
    "the inputs.\nX = torch.triangular_solve(B, A).solution\nshould be replaced with\nX = torch.linalg.solve_triangular(A, B).")
DROPOUT2D_OF_3D = (
    "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout behavior is desired - input "
    "is interpreted as shape (N, C, L), where C is the channel dim. This behavior will change in a future release to "
    "interpret the input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise dropout "
    "behavior, please switch to using dropout1d instead.")
COPY_CONSTRUCT = (
    "To copy construct from a tensor, it is recommended to use sourceTensor.detach().clone() or "
    "sourceTensor.detach().clone().requires_grad_(True), rather than kiln.tensor(sourceTensor).")
FLOAT_OF_GRAD_TENSOR = ("Converting a tensor with requires_grad=True to a scalar may lead to unexpected behavior.\n"
                        "Consider using tensor.detach() first.")
NONPOSITIVE_DOF = ("{}(): degrees of freedom is <= 0. Correction should be strictly less than the reduction factor "
                   "(input numel divided by output numel).")

_AT_LINES: dict[Any, bool] = {}
"""The warnings registry of ``warn_at_user_line``: each user line warns once, as ``warnings.warn`` does."""


def warned(message: str) -> bool:
    """Whether this process has warned ``message`` (a caller skips a costly check for a warning already given)."""
    return message in _GIVEN


def warn_once(message: str) -> None:
    """``message`` as a UserWarning at the user's line, the first time this process asks; later calls say nothing."""
    if message in _GIVEN:
        return
    _GIVEN.add(message)
    location = user_location()
    if location is None:
        warnings.warn(message, UserWarning, stacklevel=3)
    else:
        warnings.warn_explicit(message, UserWarning, location.filename, location.line)


def warn_at_user_line(message: str) -> None:
    """A ``UserWarning`` attributed to the user's line that called into kiln (``nn.Dropout2d(p)(x)``), not to kiln's."""
    location = user_location()
    if location is None:
        warnings.warn(message, UserWarning, stacklevel=3)
    else:
        warnings.warn_explicit(message, UserWarning, location.filename, location.line, registry=_AT_LINES)
