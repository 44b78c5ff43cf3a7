"""Spatial transformers: ``F.affine_grid`` (2-D and 3-D) and ``F.grid_sample`` on 4-D and 5-D (volumetric) input,
PyTorch's semantics, built from existing ops (no new op).

``affine_grid`` multiplies PyTorch's base grid (a constant of ``(x, y[, z], 1)`` rows over the output's pixels) by
``theta``. ``grid_sample`` follows PyTorch's CPU kernel step by step:

```
ix = unnormalize(grid.x, W)          (x + 1) ((W - 1) / 2) with align_corners, fma(x + 1, W / 2, -0.5) without
ix = border: clip to [0, W - 1];  reflection: reflect about the edges (pixel centers or borders), then clip
bilinear: the 4 taps floor(ix) + {0, 1} weighted by their distances;  nearest: the tap nearbyint(ix) (half to even)
bicubic:  the 4 x 4 taps floor(ix) - 1 .. + 2 (each tap's coordinate padded as above), cubic convolution A = -0.75
a tap outside the image reads 0
```

5-D input ``(N, C, D, H, W)`` with a grid ``(N, D_out, H_out, W_out, 3)`` (``x, y, z``) is the same with ``iz`` along
``D``: 'bilinear' is trilinear (the 8 taps of the cube around the point, PyTorch's ``tnw .. bse`` order), 'nearest'
rounds all three; 'bicubic' refuses, as PyTorch's (it has no 3-D bicubic).

Each tap reads the input flattened to ``(N, C, [D] H W)`` at ``([iz H +] iy) W + ix`` with ``Tensor.gather`` (one
``take`` from the flattened input when every dim is static; a one-hot when the batch dim is symbolic, which costs
``[D] H W`` per sampled point). Gradients come from autodiff: the input's is the gathers' scatter, the grid's flows
through the tap weights (floor, round and the integer tap coordinates carry none), as PyTorch's backward computes them.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts
from kiln.frontend.fused_multiply_add import SPLITTERS, nearly_fused_multiply_add
from kiln.frontend.linspace_values import torch_linspace

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")
CUBIC_A = -0.75


def affine_grid(theta: Tensor, size: Sequence[int], align_corners: bool | None = None) -> Tensor:
    """The sampling grid ``(N, H, W, 2)`` of the affine maps ``theta (N, 2, 3)`` for ``size (N, C, H, W)``, or
    ``(N, D, H, W, 3)`` of ``theta (N, 3, 4)`` for ``size (N, C, D, H, W)``, as PyTorch's."""
    _warn_if_default_align_corners(align_corners, stacklevel=3)
    size = tuple(s if isinstance(s, str) else int(s) for s in size)  # a symbolic batch (x.shape[0] when traced) stays
    spatial = len(size) - 2
    if spatial not in (2, 3) or theta.ndim != 3 or tuple(theta.shape[1:]) != (spatial, spatial + 1):
        raise located_error(f"affine_grid: expected a (N, 2, 3) theta with a 4-D size or a (N, 3, 4) theta with a 5-D size, got theta "
                            f"{theta.type} and size {list(size)}")
    if not theta.dtype.is_float:
        raise located_error(f"affine_grid: expected a floating-point theta, got {theta.type}")
    if isinstance(theta.shape[0], int) and isinstance(size[0], int) and theta.shape[0] != size[0]:
        raise located_error(f"affine_grid: theta's batch {theta.shape[0]} does not match size[0] = {size[0]}")
    if min(size[2:]) <= 0:
        raise located_error(f"affine_grid: expected non-zero, positive output size, got {list(size)}")
    base = _base_grid(size[2:], bool(align_corners), theta.dtype.numpy)  # (P, spatial + 1)
    points = (theta.unsqueeze(1) * apply("tensor.constant", value=base[None, :, None, :])).sum(-1)  # (N, P, spatial)
    return points.reshape((theta.shape[0],) + size[2:] + (spatial,))


def _warn_if_default_align_corners(align_corners: bool | None, stacklevel: int) -> None:
    """torch 2.13's UserWarning, word for word, when ``align_corners`` is left to its default (None, taken as False)."""
    if align_corners is None:
        warnings.warn("Default grid_sample and affine_grid behavior has changed to align_corners=False since 1.3.0. Please "
                      "specify align_corners=True if the old behavior is desired. See the documentation of grid_sample for "
                      "details.", stacklevel=stacklevel)


def _base_grid(sizes: tuple[int, ...], align_corners: bool, dtype: Any) -> np.ndarray:
    """Rows ``(x, y[, z], 1)`` over the output's pixels in row-major order (``x`` along the last dim), in ``dtype``."""
    axes = np.meshgrid(*[_steps(n, align_corners, np.dtype(dtype)) for n in sizes], indexing="ij")  # (D,) H, W
    columns = [axis.reshape(-1) for axis in reversed(axes)] + [np.ones(int(np.prod(sizes)), dtype)]
    return np.stack(columns, -1)


def _steps(count: int, align_corners: bool, dtype: np.dtype) -> np.ndarray:
    """PyTorch's ``linspace(-1, 1, count)`` (to the last bit: the identity's points then land on pixels exactly as
    torch's), times ``(count - 1)`` then over ``count`` without align_corners, in ``dtype``; 0 for one step."""
    if count <= 1:
        return np.zeros(max(count, 1), dtype)
    steps = torch_linspace(-1.0, 1.0, count, dtype)
    return steps if align_corners else steps * dtype.type(count - 1) / dtype.type(count)


@autocasts("grid_sampler")
def grid_sample(input: Tensor, grid: Tensor, mode: str = "bilinear", padding_mode: str = "zeros", align_corners: bool | None = None) -> Tensor:
    """Sample ``input (N, C, H, W)`` at ``grid (N, H_out, W_out, 2)`` (``x, y`` in [-1, 1], outside allowed): the
    output is ``(N, C, H_out, W_out)``; or ``input (N, C, D, H, W)`` at ``grid (N, D_out, H_out, W_out, 3)`` (``x, y,
    z``), ``(N, C, D_out, H_out, W_out)`` out. See the module docstring for the steps."""
    _check_sampling(input, grid, mode, padding_mode)
    _warn_if_default_align_corners(align_corners, stacklevel=4)  # past the autocast wrapper
    align_corners = bool(align_corners)
    sizes = [int(size) for size in reversed(input.shape[2:])]  # W, H[, D]: the order of the grid's coordinates
    read = _tap_reader(input)
    unnormalized = [_unnormalize(grid[..., axis], size, align_corners) for axis, size in enumerate(sizes)]
    if mode == "bicubic":
        (ix, iy), (width, height) = unnormalized, sizes
        return _bicubic(read, ix, iy, lambda c: _padded(c, width, padding_mode, align_corners),
                        lambda c: _padded(c, height, padding_mode, align_corners))
    points = [_padded(c, size, padding_mode, align_corners) for c, size in zip(unnormalized, sizes)]
    if mode == "nearest":
        sampled = read(*(c.round() for c in points))
        return sampled + _zero_gradient(grid).unsqueeze(1) if grid.requires_grad else sampled
    return _multilinear(read, points)


def _zero_gradient(grid: Tensor) -> Tensor:
    """Zeros ``(N, [D_out,] H_out, W_out)`` whose gradient with respect to the grid is zero: nearest's taps carry
    none, yet torch's grid (and a theta before it) gets a zero ``.grad``, not None (an optimizer skips a None)."""
    finite = apply("tensor.where", grid.isfinite(), grid, 0.0)
    return finite.sum(-1) * 0.0


def _multilinear(read: Callable[..., Tensor], points: list[Tensor]) -> Tensor:
    """Bi- or trilinear: the ``2^d`` corners around each point, ``x`` varying fastest (PyTorch's ``nw, ne, sw, se``
    then ``tnw .. bse``), each weighted by the product of its distances to the opposite corner, in ``x, y, z`` order."""
    lows = [c.floor() for c in points]
    highs = [low + 1.0 for low in lows]
    total = None
    for corner in itertools.product((0, 1), repeat=len(points)):
        sides = corner[::-1]  # (x, y[, z]): x is the last, fastest bit
        weight = None
        for c, low, high, side in zip(points, lows, highs, sides):
            factor = c - low if side else high - c
            weight = factor if weight is None else weight * factor
        term = read(*(high if side else low for low, high, side in zip(lows, highs, sides))) * weight.unsqueeze(1)
        total = term if total is None else total + term
    return total


def _check_sampling(input: Tensor, grid: Tensor, mode: str, padding_mode: str) -> None:
    if mode not in MODES:
        raise located_error(f"grid_sample: expected mode to be 'bilinear', 'nearest' or 'bicubic', but got: '{mode}'")
    if padding_mode not in PADDING_MODES:
        raise located_error(f"grid_sample: expected padding_mode to be 'zeros', 'border', or 'reflection', but got: '{padding_mode}'")
    if input.ndim not in (4, 5) or grid.ndim != input.ndim or grid.shape[-1] != input.ndim - 2:
        raise located_error(f"grid_sample expects a 4-D input (N, C, H, W) with a grid (N, H_out, W_out, 2), or a 5-D input "
                            f"(N, C, D, H, W) with a grid (N, D_out, H_out, W_out, 3), got {input.type} and {grid.type}")
    if input.ndim == 5 and mode == "bicubic":
        raise located_error(f"grid_sample: bicubic interpolation only supports 4-D input (PyTorch has no 3-D bicubic either), "
                            f"got {input.type}; use mode='bilinear' (trilinear) or 'nearest'")
    if any(isinstance(d, str) for d in input.shape[1:]) or not input.dtype.is_float or grid.dtype != input.dtype:
        raise located_error(f"grid_sample needs static C and spatial dims and a grid of the input's floating dtype, got "
                            f"{input.type} and {grid.type}")
    if isinstance(input.shape[0], int) and isinstance(grid.shape[0], int) and input.shape[0] != grid.shape[0]:
        raise located_error(f"grid_sample: expected grid and input to have the same batch size, got {input.type} and {grid.type}")


def _unnormalize(coordinate: Tensor, size: int, align_corners: bool) -> Tensor:
    """[-1, 1] to pixel indices: the corner pixels' centers with ``align_corners``, their outer edges without. Rounded
    as PyTorch's vectorised CPU kernel: ``(x + 1) * (size / 2) - 0.5`` in one fused multiply-add, so a point within an
    ulp of a pixel (the identity grid's) floors to the same tap and bilinear's gradient in the grid takes the same side.
    The fused value is the forward's; the gradient is the plain expression's (``size / 2``), as torch's."""
    shifted = coordinate + 1.0
    if align_corners:
        return shifted * ((size - 1) / 2)
    plain = shifted * (size / 2) - 0.5
    dtype = np.dtype(coordinate.dtype.numpy)
    if dtype.name not in ("float32", "float64"):
        return plain
    fused = nearly_fused_multiply_add(shifted.detach(), dtype.type(size / 2), -0.5, SPLITTERS[dtype.name])
    return plain + (fused - plain.detach())


def _padded(coordinate: Tensor, size: int, padding_mode: str, align_corners: bool) -> Tensor:
    """PyTorch's ``compute_coordinates``: as is (zeros), clipped (border), or reflected then clipped (reflection).
    As PyTorch's ``clip_coordinates_set_grad``, the clip passes the gradient only strictly inside ``(0, size - 1)``:
    a coordinate exactly on an edge gets none."""
    if padding_mode == "zeros":
        return coordinate
    if padding_mode == "reflection":
        coordinate = _reflect(coordinate, 0, 2 * (size - 1)) if align_corners else _reflect(coordinate, -1, 2 * size - 1)
    inside = (coordinate > 0.0) & (coordinate < float(size - 1))
    return apply("tensor.where", inside, coordinate, coordinate.clamp(0.0, float(size - 1)).detach())


def _reflect(coordinate: Tensor, twice_low: int, twice_high: int) -> Tensor:
    """Reflect about ``twice_low / 2`` and ``twice_high / 2`` until inside, as PyTorch's ``reflect_coordinates``."""
    if twice_low == twice_high:
        return coordinate * 0.0
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    distance = (coordinate - low).abs()
    extra = distance.fmod(span)
    flips = (distance / span).floor()
    return apply("tensor.where", (flips % 2.0).eq(0.0), extra + low, span - extra + low)


def _tap_reader(input: Tensor) -> Callable[..., Tensor]:
    """``read(ix, iy[, iz])``: the input's pixels at integer-valued coordinates ``(N, [D_out,] H_out, W_out)``,
    ``(N, C, [D_out,] H_out, W_out)`` out, zeros where a tap lies outside the image."""
    batch, channels, *spatial = input.shape
    flat = input.reshape(batch, channels, int(np.prod(spatial)))

    def read(*coordinates: Tensor) -> Tensor:
        inside, index = None, None
        for c, size in zip(reversed(coordinates), spatial):  # the slowest dim first: ([iz H +] iy) W + ix
            within = (c >= 0.0) & (c <= size - 1.0)
            clamped = c.clamp(0.0, size - 1.0)
            inside = within if inside is None else inside & within
            index = clamped if index is None else index * size + clamped
        index = index.long()
        points = index.shape[1:]
        index = index.reshape(index.shape[0], 1, -1).expand(-1, channels, -1)
        values = flat.gather(2, index).reshape((index.shape[0], channels) + tuple(points))
        return apply("tensor.where", inside.unsqueeze(1), values, 0.0)

    return read


def _bicubic(read: Callable[..., Tensor], ix: Tensor, iy: Tensor, pad_x: Callable[[Tensor], Tensor],
             pad_y: Callable[[Tensor], Tensor]) -> Tensor:
    """PyTorch's bicubic: 4 rows of 4 taps around ``floor``, each row interpolated along x, then the rows along y."""
    x0, y0 = ix.floor(), iy.floor()
    wx, wy = _cubic_weights(ix - x0), _cubic_weights(iy - y0)
    total = None
    for row, row_weight in enumerate(wy):
        tap_y = pad_y(y0 + float(row - 1))
        line = None
        for column, weight in enumerate(wx):
            term = read(pad_x(x0 + float(column - 1)), tap_y) * weight.unsqueeze(1)
            line = term if line is None else line + term
        total = line * row_weight.unsqueeze(1) if total is None else total + line * row_weight.unsqueeze(1)
    return total


def _cubic_weights(t: Tensor) -> list[Tensor]:
    """The cubic convolution weights of the taps at ``-1, 0, 1, 2`` from ``floor`` for the fraction ``t``."""
    far = lambda x: ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A  # noqa: E731  1 < |x| < 2
    near = lambda x: ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0  # noqa: E731  |x| <= 1
    return [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]


__all__ = ["affine_grid", "grid_sample"]
