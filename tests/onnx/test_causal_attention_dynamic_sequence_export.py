"""Causal attention exported with a dynamic sequence axis: ``scaled_dot_product_attention(..., is_causal=True)`` and
``nn.Transformer.generate_square_subsequent_mask(x.size(1))`` of the symbolic length traced from ranges, so one ONNX
graph serves every length (kiln refused both: "a causal mask needs static sequence lengths", and a TypeError from
NumPy). onnxruntime at lengths other than the example's against kiln eager and torch."""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from oracles import require, torch_twins


def _causal_self_attention(lib):
    nn = lib.nn

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    return CausalSelfAttention()


def _masked_encoder_layer(lib):
    nn = lib.nn

    class MaskedLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True)

        def forward(self, x):
            mask = nn.Transformer.generate_square_subsequent_mask(x.size(1))
            return self.layer(x, src_mask=mask, is_causal=True)

    return MaskedLayer()


@pytest.mark.parametrize("make", [_causal_self_attention, _masked_encoder_layer])
def test_one_graph_for_every_length(make):
    ort = require("onnxruntime")
    torch, model, twin = torch_twins(make)
    model.eval(), twin.eval()
    buffer = io.BytesIO()
    kiln.onnx.export(model, (kiln.zeros(2, 4, 8),), buffer, input_names=["x"], output_names=["y"],
                     dynamic_axes={"x": {0: "batch", 1: "sequence"}})
    session = ort.InferenceSession(buffer.getvalue())
    rng = np.random.default_rng(0)
    for batch, length in ((1, 9), (3, 2), (2, 4)):
        x = rng.standard_normal((batch, length, 8)).astype(np.float32)
        (got,) = session.run(None, {"x": x})
        np.testing.assert_allclose(got, model(kiln.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got, twin(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
