"""``F.affine_grid`` (2-D, 3-D) and ``F.grid_sample`` (4-D input; 5-D in test_grid_sample_3d_vs_torch.py) against PyTorch in float64: every mode x padding
mode x align_corners on grids reaching well outside [-1, 1], values and the gradients with respect to the input and
the grid (rtol 1e-10); nearest's half-to-even rounding on exact half-pixel grids; a symbolic batch (the one-hot
gather); a spatial transformer (affine_grid then grid_sample) differentiated through theta; the refusals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import TraceError
from layer_parity import assert_layer_matches_torch, normal
from oracles import require

F64 = dict(rtol=1e-10, atol=1e-12)
RNG = np.random.default_rng(5)
IMAGE = RNG.standard_normal((2, 3, 5, 6))
GRID = RNG.uniform(-1.6, 1.6, (2, 4, 7, 2))  # a third of the points outside the image


def _parity(torch, kiln_fn, torch_fn, *arrays):
    assert_layer_matches_torch(torch, nn.Module(), torch.nn.Module(), list(arrays), call=lambda _, *xs: kiln_fn(*xs),
                               torch_call=lambda _, *xs: torch_fn(*xs), **F64)


@pytest.mark.parametrize("mode,padding_mode,align_corners",
                         list(itertools.product(("bilinear", "nearest", "bicubic"), ("zeros", "border", "reflection"), (False, True))))
def test_grid_sample_matches_torch(mode, padding_mode, align_corners):
    torch = require("torch")
    _parity(torch, lambda x, g: F.grid_sample(x, g, mode, padding_mode, align_corners),
            lambda x, g: torch.nn.functional.grid_sample(x, g, mode, padding_mode, align_corners), IMAGE, GRID)


def test_nearest_rounds_half_to_even_as_torch():
    torch = require("torch")
    image = np.ascontiguousarray(IMAGE[:, :, :4, :4])  # W = H = 4: x = k / 2 - 1/2 lands exactly on ix = k + 0.5
    half_pixels = np.arange(-3, 10) / 2 - 0.5
    grid = np.stack(np.broadcast_arrays(half_pixels[None, :], half_pixels[::2, None]), -1)[None].repeat(2, 0)
    for padding_mode in ("zeros", "border", "reflection"):
        expected = torch.nn.functional.grid_sample(torch.tensor(image), torch.tensor(grid), "nearest", padding_mode, False).numpy()
        ours = kiln.compile(lambda x, g: F.grid_sample(x, g, "nearest", padding_mode, False), batch_dim=None)(image, grid)
        np.testing.assert_array_equal(ours, expected, err_msg=padding_mode)


def test_a_symbolic_batch_samples_the_same():
    torch = require("torch")
    compiled = kiln.compile(lambda x, g: F.grid_sample(x, g, "bilinear", "reflection", False))  # batch dim "N"
    for count in (2, 1):
        expected = torch.nn.functional.grid_sample(torch.tensor(IMAGE[:count]), torch.tensor(GRID[:count]), "bilinear", "reflection", False)
        np.testing.assert_allclose(compiled(IMAGE[:count], GRID[:count]), expected.numpy(), **F64)


@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 1, 1, 3), (2, 2, 3, 4, 5)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_matches_torch(size, align_corners):
    torch = require("torch")
    theta = normal(2, len(size) - 2, len(size) - 1, dtype="float64")
    _parity(torch, lambda t: F.affine_grid(t, size, align_corners), lambda t: torch.nn.functional.affine_grid(t, size, align_corners), theta)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_a_spatial_transformer_differentiates_through_theta(mode):
    torch = require("torch")
    theta = np.array([[[0.9, -0.3, 0.2], [0.25, 1.1, -0.15]], [[1.3, 0.1, -0.4], [-0.2, 0.7, 0.35]]])

    def transform(functional):
        return lambda x, t: functional.grid_sample(x, functional.affine_grid(t, (2, 3, 4, 7), False), mode, "border", False)

    _parity(torch, transform(F), transform(torch.nn.functional), IMAGE, theta)


def test_refusals_name_the_users_line():
    spec = kiln.TensorSpec((2, 3, 5, 6), "float64"), kiln.TensorSpec((2, 4, 7, 2), "float64")
    with pytest.raises(TraceError, match=r"test_grid_sample_vs_torch.py:\d+.*\n.*expected mode to be 'bilinear', 'nearest' or 'bicubic'"):
        kiln.trace(lambda x, g: F.grid_sample(x, g, "area"), *spec)
    with pytest.raises(TraceError, match="expected padding_mode"):
        kiln.trace(lambda x, g: F.grid_sample(x, g, padding_mode="wrap"), *spec)
    with pytest.raises(TraceError, match="bicubic interpolation only supports 4-D input"):
        kiln.trace(lambda x, g: F.grid_sample(x, g, "bicubic"), kiln.TensorSpec((2, 3, 4, 5, 6), "float64"), kiln.TensorSpec((2, 1, 4, 7, 3), "float64"))
    with pytest.raises(TraceError, match="affine_grid: expected a \\(N, 2, 3\\) theta"):
        kiln.trace(lambda t: F.affine_grid(t, (2, 3, 4, 5, 6)), kiln.TensorSpec((2, 2, 3), "float64"))
