"""``MultiheadAttention`` and the transformer layers take PyTorch's masks in every form PyTorch does: bool or float
(-inf to block, or any values added to the scores), traced or as arrays, 2-D or per head ``(N * heads, L, S)``; and
the layers' ``bias=False``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln.nn as nn
from layer_parity import assert_layer_matches_torch
from oracles import require

E, HEADS, N, L, S = 8, 2, 3, 4, 5


def normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def randomized(module, seed=1):
    for index, parameter in enumerate(module.parameters()):
        parameter.data[...] = normal(*parameter.data.shape, seed=seed + index) * 0.5
    return module


def blocked(shape, seed):
    """A bool mask, True = masked out, that leaves every query at least one key (its first)."""
    mask = np.random.default_rng(seed).random(shape) < 0.4
    mask[..., 0] = False
    return mask


MASKS = {
    "bool_array": lambda: blocked((L, S), 3),
    "float_array": lambda: np.where(blocked((L, S), 4), -np.inf, 0.0),
    "per_head_bool_array": lambda: blocked((N * HEADS, L, S), 5),
    "float_bias_array": lambda: np.where(blocked((L, S), 9), -np.inf, 0.5),  # added to the scores, as torch's
}


@pytest.mark.parametrize("mask_name", sorted(MASKS))
def test_multihead_attention_takes_array_masks_as_torch(mask_name):
    torch = require("torch")
    module = randomized(nn.MultiheadAttention(E, HEADS, batch_first=True, dtype="float64"))
    reference = torch.nn.MultiheadAttention(E, HEADS, batch_first=True).double()
    mask = MASKS[mask_name]()
    padding = blocked((N, S), 6)
    torch_mask = torch.tensor(mask)

    def call(m, q, kv):
        return m(q, kv, kv, key_padding_mask=padding, attn_mask=mask, need_weights=False)[0]

    def torch_call(m, q, kv):
        return m(q, kv, kv, key_padding_mask=torch.tensor(padding), attn_mask=torch_mask, need_weights=False)[0]

    assert_layer_matches_torch(torch, module, reference, [normal(N, L, E, seed=7), normal(N, S, E, seed=8)], call, torch_call,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_transformer_layers_without_bias_match_torch(kind):
    torch = require("torch")
    options = dict(dim_feedforward=16, dropout=0.0, batch_first=True, bias=False)
    if kind == "encoder":
        module, reference = nn.TransformerEncoderLayer(E, HEADS, dtype="float64", **options), torch.nn.TransformerEncoderLayer(E, HEADS, **options)
        arrays, call = [normal(N, L, E, seed=10)], None
    else:
        module, reference = nn.TransformerDecoderLayer(E, HEADS, dtype="float64", **options), torch.nn.TransformerDecoderLayer(E, HEADS, **options)
        arrays, call = [normal(N, L, E, seed=11), normal(N, S, E, seed=12)], None
    assert set(module.state_dict()) == set(reference.state_dict())
    assert not any("bias" in name for name in module.state_dict())
    assert_layer_matches_torch(torch, randomized(module), reference.double(), arrays, call, rtol=1e-10, atol=1e-12)
