"""PyTorch's ``TORCH_WARN_ONCE``: a UserWarning the first time a process reaches it, whatever the warnings filters
(``simplefilter("always")`` too), attributed to the user's line. torch 2.13 warns so for its deprecated linear
algebra (``torch.cholesky``, ``torch.triangular_solve``)."""

from __future__ import annotations

import warnings

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
