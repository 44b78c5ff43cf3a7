"""``F.interpolate(..., antialias=True)`` (bilinear and bicubic, 4-D) as PyTorch 2.13's: values in float64 and
float32 over down- and upsampling, sizes and scale factors (given, recomputed, per axis), ``align_corners``; the
gradient; PyTorch's ``ValueError`` for other modes and ranks. kiln refused ``antialias=True`` before (torchvision's
``Resize`` and SR data pipelines make low-resolution images with it)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

RESIZES = [dict(scale_factor=0.5), dict(scale_factor=2), dict(scale_factor=0.3), dict(size=(3, 4)),
           dict(size=(9, 2)), dict(scale_factor=(0.5, 1.5)), dict(scale_factor=0.45, recompute_scale_factor=True)]
SHAPES = [(12, 12), (7, 10)]


def _both(x, **options):
    torch = require_torch()
    theirs = torch.nn.functional.interpolate(torch.tensor(x), antialias=True, **options).numpy()
    ours = np.asarray(kiln.nn.functional.interpolate(kiln.tensor(x), antialias=True, **options))
    return ours, theirs


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-13), (np.float32, 1e-5)], ids=["float64", "float32"])
def test_antialiased_resize_as_torch(mode, dtype, tolerance):
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        for resize in RESIZES:
            for align_corners in (False, True):
                x = rng.standard_normal((2, 3) + shape).astype(dtype)
                ours, theirs = _both(x, mode=mode, align_corners=align_corners, **resize)
                assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=tolerance, err_msg=f"{shape} {resize}")


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialiased_resize_gradient_as_torch(mode):
    torch = require_torch()
    rng = np.random.default_rng(1)
    x, seed = rng.standard_normal((2, 2, 11, 8)), rng.standard_normal((2, 2, 5, 12))
    theirs = torch.tensor(x, requires_grad=True)
    torch.nn.functional.interpolate(theirs, size=(5, 12), mode=mode, antialias=True).backward(torch.tensor(seed))
    ours = kiln.tensor(x, requires_grad=True)
    kiln.nn.functional.interpolate(ours, size=(5, 12), mode=mode, antialias=True).backward(kiln.tensor(seed))
    np.testing.assert_allclose(np.asarray(ours.grad), theirs.grad.numpy(), rtol=0, atol=1e-13)


def test_an_output_width_of_one_resizes_each_row():
    """PyTorch 2.13's CPU kernel repeats the first output row when the output width is 1 (``arange(5.)`` as a (5, 1)
    column to (2, 1) gives [1, 1]); kiln gives each row its own cells, as the same resize of the (1, 5) row does in
    PyTorch ([1, 3])."""
    torch = require_torch()
    column = np.arange(5.0).reshape(1, 1, 5, 1)
    ours = kiln.nn.functional.interpolate(kiln.tensor(column), size=(2, 1), mode="bilinear", antialias=True)
    row = torch.nn.functional.interpolate(torch.tensor(column.reshape(1, 1, 1, 5)), size=(1, 2), mode="bilinear",
                                          antialias=True)
    np.testing.assert_allclose(np.asarray(ours).ravel(), row.numpy().ravel(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(ours).ravel(), [1.0, 3.0])


@pytest.mark.parametrize("mode, shape", [("nearest", (1, 1, 4, 4)), ("area", (1, 1, 4, 4)), ("linear", (1, 1, 4)),
                                         ("trilinear", (1, 1, 4, 4, 4))])
def test_antialias_with_another_mode_is_refused_as_torch(mode, shape):
    torch = require_torch()
    with pytest.raises(ValueError) as theirs:
        torch.nn.functional.interpolate(torch.zeros(shape), scale_factor=0.5, mode=mode, antialias=True)
    with pytest.raises(ValueError) as ours:
        kiln.nn.functional.interpolate(kiln.zeros(shape), scale_factor=0.5, mode=mode, antialias=True)
    assert str(theirs.value) in str(ours.value) and "antialias=False" in str(ours.value)


def test_antialiased_resize_in_a_compiled_step_as_torch():
    torch = require_torch()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 12, 12))

    def shrink(lib, image):
        return lib.nn.functional.interpolate(image, scale_factor=0.5, mode="bicubic", antialias=True).clamp(0, 1)

    ours = kiln.compile(lambda image: shrink(kiln, image), fullgraph=True)(kiln.tensor(x))
    np.testing.assert_allclose(np.asarray(ours), shrink(torch, torch.tensor(x)).numpy(), rtol=0, atol=1e-13)
