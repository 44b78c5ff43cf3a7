"""``F.interpolate(..., antialias=True)`` for ``bilinear`` and ``bicubic`` (4-D), as PyTorch's separable
anti-aliased kernel (Pillow's resampling): each output cell is a normalized weighted sum of the input cells within the
filter's support, the support widened by the scale when downsampling, so every input cell contributes (no aliasing).

Along each axis (the last first, as PyTorch's horizontal pass) the resize is a constant matrix ``(out, in)`` built
here at trace time, applied by a matmul, so gradients come from the matmul's rule. PyTorch's arithmetic, per output
cell ``i``::

    support = (interp_size / 2) * scale if scale >= 1 else interp_size / 2    # interp_size 2 (linear), 4 (cubic)
    center  = scale * (i + 0.5)
    xmin    = max(int(center - support + 0.5), 0);  xmax = min(int(center + support + 0.5), in)
    w_j     = filter((j - center + 0.5) / max(scale, 1)) for j in [xmin, xmax), then divided by their sum

with ``scale`` as the non-antialiased modes take it (``1 / scale_factor`` when given, else ``in / out``;
``(in - 1) / (out - 1)`` with ``align_corners``), the triangle filter for bilinear and Keys' cubic with ``a = -0.5``
(not the ``-0.75`` of ``antialias=False``) for bicubic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error

INTERP_SIZE = {"bilinear": 2, "bicubic": 4}
"""The taps of each mode's filter at scale 1."""

ANTIALIAS_CUBIC_A = -0.5
"""The cubic parameter of PyTorch's (and Pillow's) anti-aliased bicubic."""


class AntialiasModeError(TraceError, ValueError):
    """``antialias=True`` with another mode or rank: a ``ValueError``, as PyTorch's."""


def check_antialias(input: Tensor, mode: str) -> None:
    """PyTorch's restriction of ``antialias=True``, with its words (kiln has no ``lanczos``)."""
    if mode not in INTERP_SIZE or input.ndim != 4:
        error = AntialiasModeError(str(located_error(
            f"interpolate: Anti-alias option is restricted to bilinear, bicubic, and lanczos modes and requires a 4-D "
            f"tensor as input (got mode {mode!r} and {input.type}); kiln's are bilinear and bicubic, else pass "
            "antialias=False")))
        error.located = True  # type: ignore[attr-defined]
        raise error


def antialiased_resize(input: Tensor, sizes: list[int], outputs: list[int], scales: list[float | None], mode: str,
                       align_corners: bool) -> Tensor:
    """``input`` (N, C, H, W) resized to ``outputs`` by the anti-aliased filter of ``mode``: W first, then H."""
    real = np.dtype(input.dtype.numpy).type
    result = input
    if outputs[1] != sizes[1]:
        width = _weights(sizes[1], outputs[1], scales[1], mode, align_corners, real)
        result = result @ width.T
    if outputs[0] != sizes[0]:
        height = _weights(sizes[0], outputs[0], scales[0], mode, align_corners, real)
        result = height @ result
    return result


def _weights(size: int, out: int, scale_factor: float | None, mode: str, align_corners: bool, real: type) -> np.ndarray:
    """The ``(out, size)`` matrix of PyTorch's normalized anti-aliased weights (module docstring)."""
    scale = _scale(size, out, scale_factor, align_corners)
    support = INTERP_SIZE[mode] * 0.5 * (scale if scale >= 1.0 else 1.0)
    inverse = 1.0 / scale if scale >= 1.0 else 1.0
    matrix = np.zeros((out, size), np.float64)
    for i in range(out):
        center = scale * (i + 0.5)
        first, stop = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), size)
        taps = np.arange(first, stop)
        weights = _filter(mode, (taps - center + 0.5) * inverse)
        total = weights.sum()
        matrix[i, first:stop] = weights / total if total != 0 else weights
    return matrix.astype(real)


def _scale(size: int, out: int, scale_factor: float | None, align_corners: bool) -> float:
    """PyTorch's ``area_pixel_compute_scale``."""
    if align_corners:
        return (size - 1) / (out - 1) if out > 1 else 0.0
    return 1.0 / scale_factor if scale_factor is not None and scale_factor > 0 else size / out


def _filter(mode: str, x: np.ndarray) -> Any:
    x = np.abs(x)
    if mode == "bilinear":
        return np.where(x < 1.0, 1.0 - x, 0.0)
    a = ANTIALIAS_CUBIC_A
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))
