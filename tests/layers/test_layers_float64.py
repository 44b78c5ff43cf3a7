"""The layers against ``torch.nn`` in float64, where the agreement must be much tighter (rtol 1e-10)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from layer_parity import assert_layer_matches_torch
from oracles import require


def as_float64(module):
    for parameter in module.parameters():
        parameter.data = parameter.data.astype(np.float64)
    return module


def inputs(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


LAYERS = {
    "linear": (lambda t: (nn.Linear(6, 4), t.nn.Linear(6, 4)), lambda: [inputs(3, 6)]),
    "layer_norm": (lambda t: (nn.LayerNorm(6), t.nn.LayerNorm(6)), lambda: [inputs(2, 3, 6) * 3 + 1]),
    "conv2d": (lambda t: (nn.Conv2d(2, 4, 3, stride=2, padding=1), t.nn.Conv2d(2, 4, 3, stride=2, padding=1)), lambda: [inputs(2, 2, 7, 7)]),
    "gelu": (lambda t: (nn.GELU(), t.nn.GELU()), lambda: [inputs(4, 5) * 2]),
    "attention": (
        lambda t: (nn.MultiheadAttention(8, 2, batch_first=True), t.nn.MultiheadAttention(8, 2, batch_first=True)),
        lambda: [inputs(2, 5, 8)] * 3,
    ),
    "encoder": (
        lambda t: (nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True),
                   t.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True)),
        lambda: [inputs(2, 5, 8)],
    ),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_torch_in_float64(name):
    torch = require("torch")
    kiln.manual_seed(0)
    build, make_inputs = LAYERS[name]
    module, reference = build(torch)
    call = (lambda m, q, k, v: m(q, k, v, need_weights=False)[0]) if name == "attention" else None
    assert_layer_matches_torch(torch, as_float64(module).eval(), reference.double().eval(), make_inputs(), call=call, rtol=1e-10, atol=1e-12)
