"""``grid_sample`` on ``affine_grid``'s identity grid (a spatial transformer's start: ``fc_loc`` initialised to the
identity) against torch 2.13: every sample point lies on a pixel, where bilinear's gradient with respect to the grid
jumps from one side's slope to the other's, so kiln must put the points exactly where torch does. kiln's grid came
from NumPy's ``linspace`` and its unnormalisation rounded twice; a third of the points fell an ulp to the other side
and the grid's (and theta's) gradient there was the other side's slope, off by O(1). Nearest's grid gets torch's zero
gradient (it got none: theta.grad was None, which an optimizer skips)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries

SIZES = [(2, 3, 5, 7), (1, 2, 12, 11)]
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _run(name, size, mode, padding_mode, align_corners, dtype):
    torch, _, F = libraries(name)
    x = torch.tensor(np.random.default_rng(0).standard_normal(size), dtype=getattr(torch, dtype), requires_grad=True)
    theta = torch.tensor(np.repeat(IDENTITY[None], size[0], 0), dtype=getattr(torch, dtype), requires_grad=True)
    grid = F.affine_grid(theta, x.size(), align_corners=align_corners)
    grid.retain_grad()
    out = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    (out * torch.linspace(-1.0, 2.0, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    return {key: np.asarray(value.detach().numpy()) for key, value in
            dict(grid=grid, out=out, x_grad=x.grad, grid_grad=grid.grad, theta_grad=theta.grad).items()}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode,padding_mode", [("bilinear", "zeros"), ("bilinear", "border"), ("bilinear", "reflection"),
                                               ("bicubic", "zeros"), ("nearest", "zeros"), ("nearest", "border")])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_identity_grid_gradients_match_torch(size, mode, padding_mode, align_corners, dtype):
    ours, theirs = (_run(name, size, mode, padding_mode, align_corners, dtype) for name in ("kiln", "torch"))
    np.testing.assert_array_equal(ours["grid"], theirs["grid"])
    tolerance = dict(rtol=1e-10, atol=1e-10) if dtype == "float64" else dict(rtol=2e-5, atol=2e-4)
    for key in ("out", "x_grad", "grid_grad", "theta_grad"):
        assert ours[key].dtype == theirs[key].dtype, key
        np.testing.assert_allclose(ours[key], theirs[key], **tolerance, err_msg=key)
    if mode == "nearest":
        assert not theirs["theta_grad"].any()


def test_default_align_corners_warns_as_torch():
    """The STN tutorial's ``F.affine_grid(theta, x.size())`` and ``F.grid_sample(x, grid)``: torch 2.13 warns that the
    default is align_corners=False, once per call, at the caller's line; kiln said nothing."""
    import warnings

    messages = []
    for name in ("kiln", "torch"):
        torch, _, F = libraries(name)
        x, theta = torch.ones(1, 1, 4, 4), torch.tensor(np.repeat(IDENTITY[None], 1, 0), dtype=torch.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            F.grid_sample(x, F.affine_grid(theta, x.size()))
            F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=True)
        messages.append([(str(w.message), w.category, w.filename) for w in caught])
    assert messages[0] == messages[1] and len(messages[0]) == 2
    assert messages[0][0][2] == __file__
