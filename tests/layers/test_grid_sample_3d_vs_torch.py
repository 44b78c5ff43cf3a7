"""``F.grid_sample`` on 5-D (volumetric) input against PyTorch 2.13: 'bilinear' (trilinear) and 'nearest' x every
padding mode x align_corners, on grids reaching well outside [-1, 1]; values and the gradients with respect to the
input and the grid in float64 (1e-12) and float32; eager (``kiln.tensor(..., requires_grad=True)``), ``kiln.compile``
with a symbolic batch, nearest's half-to-even rounding on exact half voxels, and a 3-D spatial transformer
(``affine_grid`` then ``grid_sample``) trained in lockstep with its PyTorch twin. Half dtypes: ``tests/half``'s
``test_half_grid_sample_3d.py``. The refusals: 3-D bicubic (PyTorch has none) and a grid of the wrong rank."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import TraceError
from layer_parity import assert_layer_matches_torch
from lockstep import mse_sgd_in_lockstep
from oracles import require, torch_twins

F64 = dict(rtol=1e-12, atol=1e-12)
F32 = dict(rtol=2e-5, atol=2e-5)
RNG = np.random.default_rng(7)
VOLUME = RNG.standard_normal((2, 3, 4, 5, 6))  # N, C, D, H, W: every spatial size different
GRID = RNG.uniform(-1.6, 1.6, (2, 3, 4, 5, 3))  # N, D_out, H_out, W_out, (x, y, z): most points' cubes leave the volume
CASES = list(itertools.product(("bilinear", "nearest"), ("zeros", "border", "reflection"), (False, True)))


def _parity(torch, arrays, tolerance, *options):
    assert_layer_matches_torch(torch, nn.Module(), torch.nn.Module(), list(arrays), call=lambda _, x, g: F.grid_sample(x, g, *options),
                               torch_call=lambda _, x, g: torch.nn.functional.grid_sample(x, g, *options), **tolerance)


@pytest.mark.parametrize("mode,padding_mode,align_corners", CASES)
def test_values_and_gradients_match_torch_in_float64(mode, padding_mode, align_corners):
    _parity(require("torch"), (VOLUME, GRID), F64, mode, padding_mode, align_corners)


@pytest.mark.parametrize("mode,padding_mode,align_corners", CASES[::3] + CASES[1::5])
def test_values_and_gradients_match_torch_in_float32(mode, padding_mode, align_corners):
    _parity(require("torch"), (VOLUME.astype(np.float32), GRID.astype(np.float32)), F32, mode, padding_mode, align_corners)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (3, 2, 2, 1, 3)])
def test_unit_and_small_volumes_and_other_batch_and_channel_sizes(shape):
    torch = require("torch")
    volume = RNG.standard_normal(shape)
    grid = RNG.uniform(-1.3, 1.3, (shape[0], 2, 1, 3, 3))
    for options in (("bilinear", "reflection", True), ("bilinear", "zeros", False), ("nearest", "border", False)):
        _parity(torch, (volume, grid), F64, *options)


def test_eager_gradients_match_torch():
    torch = require("torch")
    weights = RNG.standard_normal((2, 3, 3, 4, 5))
    volume, grid = kiln.tensor(VOLUME, requires_grad=True), kiln.tensor(GRID, requires_grad=True)
    output = F.grid_sample(volume, grid, "bilinear", "border", False)
    (output * kiln.tensor(weights)).sum().backward()
    their_volume, their_grid = torch.tensor(VOLUME, requires_grad=True), torch.tensor(GRID, requires_grad=True)
    expected = torch.nn.functional.grid_sample(their_volume, their_grid, "bilinear", "border", False)
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(output.numpy(), expected.detach().numpy(), **F64)
    np.testing.assert_allclose(volume.grad.numpy(), their_volume.grad.numpy(), **F64)
    np.testing.assert_allclose(grid.grad.numpy(), their_grid.grad.numpy(), **F64)


def test_a_compiled_symbolic_batch_samples_the_same():
    torch = require("torch")
    compiled = kiln.compile(lambda x, g: F.grid_sample(x, g, "bilinear", "reflection", False))  # batch dim "N"
    for count in (2, 1):
        expected = torch.nn.functional.grid_sample(torch.tensor(VOLUME[:count]), torch.tensor(GRID[:count]), "bilinear", "reflection", False)
        np.testing.assert_allclose(compiled(VOLUME[:count], GRID[:count]), expected.numpy(), **F64)


def test_nearest_rounds_half_to_even_as_torch():
    torch = require("torch")
    volume = np.ascontiguousarray(VOLUME[:, :, :4, :4, :4])  # D = H = W = 4: c = k / 2 - 1/2 lands exactly on k + 0.5
    half_voxels = np.arange(-3, 10) / 2 - 0.5
    grid = np.stack(np.broadcast_arrays(half_voxels[None, None, :], half_voxels[None, ::2, None], half_voxels[::3, None, None]), -1)
    grid = np.ascontiguousarray(np.repeat(grid[None], 2, 0))
    for padding_mode in ("zeros", "border", "reflection"):
        expected = torch.nn.functional.grid_sample(torch.tensor(volume), torch.tensor(grid), "nearest", padding_mode, False).numpy()
        ours = kiln.compile(lambda x, g: F.grid_sample(x, g, "nearest", padding_mode, False), batch_dim=None)(volume, grid)
        np.testing.assert_array_equal(ours, expected, err_msg=padding_mode)


def _transformer(lib):
    """A 3-D spatial transformer: a linear localisation net predicts each volume's (3, 4) affine map from its
    voxels, the volume is resampled on that grid (trilinear, border) and a linear head reads the result."""

    class Transformer3d(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.localize = lib.nn.Linear(2 * 3 * 4 * 4, 12)
            self.head = lib.nn.Linear(2 * 2 * 3 * 3, 2)

        def forward(self, x):
            theta = self.localize(x.flatten(1)).reshape(-1, 3, 4) * 0.3 + lib.eye(3, 4, dtype=x.dtype)
            grid = lib.nn.functional.affine_grid(theta, (x.shape[0], 2, 2, 3, 3), align_corners=False)
            return self.head(lib.nn.functional.grid_sample(x, grid, "bilinear", "border", align_corners=False).flatten(1))

    return Transformer3d().double()


def test_a_spatial_transformer_trains_in_lockstep_with_torch():
    torch, model, twin = torch_twins(_transformer)
    x = np.random.default_rng(3).standard_normal((4, 2, 3, 4, 4))
    y = np.random.default_rng(4).standard_normal((4, 2))
    losses = list(mse_sgd_in_lockstep(torch, model, twin, [(x, y)] * 4, lr=0.2))
    assert losses[-1] < losses[0]
    for ours, theirs in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(ours.data), theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_refusals_name_the_users_line():
    volume, grid = kiln.TensorSpec((2, 3, 4, 5, 6), "float64"), kiln.TensorSpec((2, 1, 4, 7, 3), "float64")
    with pytest.raises(TraceError, match=r"test_grid_sample_3d_vs_torch.py:\d+.*\n.*bicubic interpolation only supports 4-D input"):
        kiln.trace(lambda x, g: F.grid_sample(x, g, "bicubic"), volume, grid)
    with pytest.raises(TraceError, match=r"a 5-D input \(N, C, D, H, W\) with a grid \(N, D_out, H_out, W_out, 3\)"):
        kiln.trace(lambda x, g: F.grid_sample(x, g), volume, kiln.TensorSpec((2, 4, 7, 3), "float64"))
    with pytest.raises(TraceError, match="grid \\(N, D_out, H_out, W_out, 3\\)"):
        kiln.trace(lambda x, g: F.grid_sample(x, g), volume, kiln.TensorSpec((2, 1, 4, 7, 2), "float64"))


@pytest.mark.parametrize("mode,padding_mode,align_corners", CASES)
def test_points_exactly_on_the_edges_get_torchs_gradients(mode, padding_mode, align_corners):
    """Grid coordinates on voxel centres and edges (-1, -1/2, 0, 1/2, 1 and beyond): a clipped coordinate exactly on
    the edge gets no gradient, as PyTorch's ``clip_coordinates_set_grad``."""
    edges = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    grid = np.stack(np.broadcast_arrays(edges[None, None, :], edges[None, ::2, None], edges[::3, None, None]), -1)
    _parity(require("torch"), (VOLUME[:1], np.ascontiguousarray(grid[None])), F64, mode, padding_mode, align_corners)
