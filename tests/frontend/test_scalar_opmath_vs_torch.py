"""A Python number times or divided into a tensor, bit for bit as PyTorch 2.13's CPU kernels:

- a half tensor (bfloat16, float16) times / divided by a number keeps the number in float32 (``x * 0.3`` is
  ``float32(x) * 0.3f`` rounded once); kiln rounded 0.3 to the tensor's dtype first, so ~46% of bfloat16 products
  (~21% of float16 ones) were one step off torch's (attention's ``q * head_dim ** -0.5``, LoRA's ``* scaling``).
  Adding or subtracting a number rounds it to the tensor's dtype, in torch and kiln alike.
- ``number / x`` is torch's ``x.reciprocal() * number`` (a quarter of float64 quotients differed in the last bit).
  Its gradient still differs from torch's in the last bits (torch's reciprocal backward is ``-g * r * r``, kiln's
  division rule ``-(g / x) * r``): compared to 4 steps of the dtype there, bit for bit elsewhere.

Eagerly, compiled, in place, and the gradients; found by a bfloat16 LoRA probe."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

X = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
X = np.where(np.abs(X) < 0.05, np.float32(0.05), X)  # float16: torch's r * r overflows to inf below ~0.004, kiln's not

PROGRAMS = {
    "x * 0.3": lambda x: x * 0.3,
    "0.3 * x": lambda x: 0.3 * x,
    "x / 0.3": lambda x: x / 0.3,
    "x.mul(0.7).div(1.3)": lambda x: x.mul(0.7).div(1.3),
    "x + x * 0.3 - 0.1": lambda x: x + x * 0.3 - 0.1,
    "0.3 / x": lambda x: 0.3 / x,
    "2 / x + x.reciprocal()": lambda x: 2 / x + x.reciprocal(),
    "in place *= /=": lambda x: _in_place(x),
}


def _in_place(x):
    y = x.clone()
    y *= 0.35355339
    y /= 0.7
    return y.mul_(1.1)


def _values(tensor):
    return tensor.detach().float().numpy()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64"])
@pytest.mark.parametrize("program", PROGRAMS)
def test_number_operand_as_torch(program, dtype):
    torch = require_torch()
    fn = PROGRAMS[program]
    theirs_x = torch.tensor(X).to(getattr(torch, dtype)).requires_grad_()
    ours_x = kiln.tensor(X).to(getattr(kiln, dtype)).requires_grad_()
    theirs, ours = fn(theirs_x), fn(ours_x)
    assert str(ours.dtype).split(".")[-1] == dtype
    np.testing.assert_array_equal(_values(ours), _values(theirs))
    compiled = kiln.compile(fn)(kiln.tensor(X).to(getattr(kiln, dtype)))
    np.testing.assert_array_equal(np.asarray(compiled).astype(np.float32), _values(theirs))
    if "in place" in program:
        return
    theirs.sum().backward()
    ours.sum().backward()
    if "/ x" in program:  # torch's reciprocal backward is -g * r * r, kiln's -(g / x) * r: a few steps of the dtype
        ulps = 4 * float(torch.finfo(getattr(torch, dtype)).eps)
        np.testing.assert_allclose(_values(ours_x.grad), _values(theirs_x.grad), rtol=ulps)
    else:
        np.testing.assert_array_equal(_values(ours_x.grad), _values(theirs_x.grad))
