"""``kiln.onnx.export`` of a model whose forward writes a parameter through ``.data`` before using it (PixelCNN's
``MaskedConv2d``: ``self.weight.data *= self.mask`` then ``super().forward(x)``; a weight clipped by
``self.weight.data.clamp_``), as ``torch.onnx.export(dynamo=False)`` exports it: the graph reads the written
weight. kiln refused the write ("mul_ on a parameter inside a traced function"). onnxruntime runs the file and agrees
with PyTorch's forward."""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from oracles import libraries, require


def masked_conv(torch, nn, F):
    class MaskedConv2d(nn.Conv2d):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("mask", self.weight.data.clone())
            _, _, kH, kW = self.weight.size()
            self.mask.fill_(1)
            self.mask[:, :, kH // 2, kW // 2:] = 0
            self.mask[:, :, kH // 2 + 1:] = 0

        def forward(self, x):
            self.weight.data *= self.mask
            return super().forward(x)

    return nn.Sequential(MaskedConv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 1))


def clipped_linear(torch, nn, F):
    class ClippedLinear(nn.Linear):
        def forward(self, x):
            self.weight.data.clamp_(-0.2, 0.2)
            return super().forward(x)

    return ClippedLinear(5, 3)


MODELS = {"masked conv (float32)": (masked_conv, (2, 2, 5, 5), "float32"),
          "clipped linear (float64)": (clipped_linear, (4, 5), "float64")}


@pytest.mark.parametrize("name", list(MODELS))
def test_export_of_a_forward_writing_its_weight_through_data_runs_as_torch(name):
    onnxruntime = require("onnxruntime")
    build, shape, dtype = MODELS[name]
    kiln.manual_seed(0)
    model = build(*libraries("kiln")).to(getattr(kiln, dtype))
    torch, nn, F = libraries("torch")
    twin = build(torch, nn, F).to(getattr(torch, dtype))
    twin.load_state_dict({key: torch.tensor(np.array(value)) for key, value in model.state_dict().items()})
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    file = io.BytesIO()
    kiln.onnx.export(model.eval(), (kiln.tensor(x),), file, input_names=["x"], output_names=["y"])
    got = onnxruntime.InferenceSession(file.getvalue()).run(None, {"x": x})[0]
    with torch.no_grad():
        expected = twin.eval()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
