"""Half-precision activations built from several ops compute in float32 and round once, as torch 2.13's CPU kernels:
``softplus`` (with ``beta``/``threshold``), ``mish``, ``logsigmoid``, ``elu``, ``celu``, ``selu``, ``hardswish`` and
``hardsigmoid`` rounded each intermediate op to float16/bfloat16, which put 5-30% of their values off torch's (and
off the correctly rounded result) by up to 7 ulps. Values and gradients are compared with torch's, eagerly."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

FUNCTIONS = {"softplus": {}, "softplus, beta 2, threshold 5": dict(beta=2.0, threshold=5.0), "mish": {},
             "logsigmoid": {}, "elu": dict(alpha=0.7), "celu": dict(alpha=1.5), "selu": {}, "hardswish": {},
             "hardsigmoid": {}}
ULP = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}
SMALLEST_NORMAL = {"float16": 2.0 ** -14, "bfloat16": 2.0 ** -126}


def _value_and_gradient(lib, name, dtype):
    rng = np.random.default_rng(0)
    x = lib.tensor(rng.standard_normal(20000) * 4).to(getattr(lib, dtype)).requires_grad_(True)
    y = getattr(lib.nn.functional, name.split(",")[0])(x, **FUNCTIONS[name])
    y.backward(lib.tensor(np.cos(np.arange(20000))).to(getattr(lib, dtype)))
    return y.detach().float().numpy(), x.grad.float().numpy()


def _ulps(ours, theirs, dtype):
    return np.abs(ours - theirs) / (np.maximum(np.abs(theirs), SMALLEST_NORMAL[dtype]) * ULP[dtype])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_a_half_activation_rounds_once_as_torch(name, dtype):
    torch = require_torch()
    (ours, our_gradient), (theirs, their_gradient) = (_value_and_gradient(lib, name, dtype) for lib in (kiln, torch))
    assert np.mean(ours != theirs) <= 1e-3 and _ulps(ours, theirs, dtype).max() <= 1  # float32 libm ties, no more
    assert _ulps(our_gradient, their_gradient, dtype).max() <= 2
