"""``F.interpolate(mode="bicubic")`` against torch 2.13: PyTorch's cubic convolution (A = -0.75), its source index
(not clamped at 0, unlike linear's), clamped taps, ``align_corners``, scale factors vs sizes; values and gradients."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import require_torch

import kiln

CASES = [dict(size=(9, 4)), dict(scale_factor=2.0), dict(scale_factor=1.7), dict(size=(3, 11), align_corners=True),
         dict(scale_factor=0.6), dict(scale_factor=(1.5, 0.8), recompute_scale_factor=True), dict(size=(5, 7))]


@pytest.mark.parametrize("options", CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_bicubic_matches_torch_values_and_gradients(options):
    torch = require_torch()
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7))
    ours = kiln.tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    out = kiln.nn.functional.interpolate(ours, mode="bicubic", **options)
    expected = torch.nn.functional.interpolate(theirs, mode="bicubic", **options)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-13, atol=1e-13)
    weights = np.random.default_rng(1).standard_normal(tuple(expected.shape))
    (out * kiln.tensor(weights)).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(np.asarray(ours.grad), theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_bicubic_in_lower_precision_follows_torch(dtype):
    """float32 within a few float32 ulps (summation order); a half input computes in float32 and rounds once."""
    torch = require_torch()
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 6)).astype(np.float32)
    out = kiln.nn.functional.interpolate(kiln.tensor(x).to(getattr(kiln, dtype)), scale_factor=1.5, mode="bicubic")
    expected = torch.nn.functional.interpolate(torch.tensor(x).to(getattr(torch, dtype)), scale_factor=1.5, mode="bicubic")
    assert out.dtype is getattr(kiln, dtype)
    eps = float(kiln.finfo(getattr(kiln, dtype)).eps)
    want = expected.float().numpy()  # a cancelling sum of four products: a few ulps of the largest value, not of each
    np.testing.assert_allclose(out.float().numpy(), want, rtol=2 * eps, atol=8 * eps * np.abs(want).max())


def test_bicubic_needs_a_4d_input():
    with pytest.raises(kiln.KilnError, match="bicubic"):
        kiln.nn.functional.interpolate(kiln.ones((1, 2, 5)), scale_factor=2.0, mode="bicubic")
