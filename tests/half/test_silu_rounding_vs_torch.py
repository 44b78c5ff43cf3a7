"""``F.silu`` of a half tensor computes ``x * sigmoid(x)`` in float32 and rounds once, as torch's CPU kernel, and so
its gradient (torch's ``silu_backward`` in float32, rounded once): kiln rounded the sigmoid to half before the product,
and each step of the backward, so a quarter of bfloat16 values and half of the gradients were off by an ulp or more
(LLaMA's SwiGLU under ``torch.autocast``). Checked bit for bit against torch 2.13 (float16: the float32 sigmoid may
differ in its last bit, so a rare value rounds the other way: at most 1 ulp)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

EPS = {"bfloat16": 2.0 ** -7, "float16": 2.0 ** -10}


def _silu_and_gradient(lib, dtype, x, g):
    x = lib.tensor(x).to(getattr(lib, dtype)).requires_grad_()
    y = lib.nn.SiLU()(x)
    y.backward(lib.tensor(g).to(getattr(lib, dtype)))
    assert y.dtype == getattr(lib, dtype) and x.grad.dtype == getattr(lib, dtype)
    return [np.asarray(t.detach().float().numpy(), np.float64) for t in (y, x.grad)]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_silu_and_its_gradient_round_once_as_torchs(dtype):
    torch = require_torch()
    rng = np.random.default_rng(0)
    x, g = (rng.standard_normal(4000) * 3).astype(np.float32), rng.standard_normal(4000).astype(np.float32)
    ours, theirs = _silu_and_gradient(kiln, dtype, x, g), _silu_and_gradient(torch, dtype, x, g)
    for a, b in zip(ours, theirs):
        if dtype == "bfloat16":
            np.testing.assert_array_equal(a, b)
        else:
            assert (a != b).sum() <= 8
            np.testing.assert_allclose(a, b, rtol=EPS[dtype], atol=0)


def test_swiglu_under_bfloat16_autocast_gives_torchs_gradients():
    """``w2(F.silu(w1(x)) * w3(x))`` in a CPU bfloat16 autocast region: the float32 weights' gradients are torch's."""
    torch = require_torch()
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s).astype(np.float32) * 0.3 for s in [(4, 6, 16), (24, 16), (24, 16), (16, 24)]]
    grads = []
    for lib in (kiln, torch):
        x, *weights = (lib.tensor(a, requires_grad=i > 0) for i, a in enumerate(arrays))
        F = lib.nn.functional
        with lib.autocast(device_type="cpu", dtype=lib.bfloat16):
            out = F.linear(F.silu(F.linear(x, weights[0])) * F.linear(x, weights[1]), weights[2])
        (out.float() ** 2).sum().backward()
        grads.append([np.asarray(w.grad.numpy(), np.float64) for w in weights])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
