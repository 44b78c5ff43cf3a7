"""The gradient of a half operand broadcast by an elementwise op (``x * r`` with ``r`` of shape ``(n, 1)``, a bias, an
RMSNorm's per-row scale) is torch's to the bit: its elementwise backward rounds the full-shape gradient to half, then
``sum_to_size`` adds it in float32 and rounds once (``compiler/autodiff/half_vjp.py``'s ``summed_in_float32``). kiln
summed the unrounded float32 products, so 40% of the summed gradients were an ulp or more off. A matmul's broadcast
weight gradient stays one float32 product (torch's single GEMM). Checked against torch 2.13, eagerly and compiled."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

CASES = {
    "row scale": (lambda x, r: x * r, (64, 256), (64, 1)),
    "column bias": (lambda x, r: x + r * 3, (64, 256), (256,)),
    "subtracted row": (lambda x, r: x - r, (32, 128), (32, 1)),
    "batched matmul weight": (lambda x, r: x @ r, (4, 16, 32), (32, 8)),
}


def _gradient(lib, dtype, case, compiled):
    function, x_shape, r_shape = CASES[case]
    rng = np.random.default_rng(0)
    x, r, g = (rng.standard_normal(s).astype(np.float32) for s in (x_shape, r_shape, x_shape))
    half = getattr(lib, dtype)
    x, r = lib.tensor(x).to(half), lib.tensor(r).to(half).requires_grad_()
    out_grad = lib.tensor(rng.standard_normal(function(np.zeros(x_shape), np.zeros(r_shape)).shape).astype(np.float32))
    run = kiln.compile(function) if compiled else function
    run(x, r).backward(out_grad.to(half))
    return np.asarray(r.grad.float().numpy(), np.float64)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", CASES)
def test_a_broadcast_half_operands_gradient_is_torchs(case, dtype, compiled):
    torch = require_torch()
    ours, theirs = _gradient(kiln, dtype, case, compiled), _gradient(torch, dtype, case, False)
    if "matmul" in case:  # float32 products summed in another order: the rounded result may differ in its last bit
        np.testing.assert_allclose(ours, theirs, rtol=2.0 ** -7 if dtype == "bfloat16" else 2.0 ** -10)
    else:
        np.testing.assert_array_equal(ours, theirs)
