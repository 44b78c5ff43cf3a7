"""``kiln.onnx.export`` of a forward whose Python reads a value from the model's buffers or weights (Glow's ActNorm:
``if self.initialized.item() == 0: self.initialize(input)``; a branch on a weight's norm) exports the branch those
values take now, as ``torch.onnx.export`` bakes it: the file holds these weights. kiln refused the ``item()``. A value
read from the export's inputs stays refused: the file must serve any input (``frontend/value_guards.py``)."""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from oracles import libraries, require


def act_norm(torch, nn, F):
    class ActNorm(nn.Module):  # rosinality/glow-pytorch's, plus a branch on a trained weight
        def __init__(self, channels):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
            self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
            self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

        def initialize(self, x):
            with torch.no_grad():
                flatten = x.permute(1, 0, 2, 3).contiguous().view(x.shape[1], -1)
                self.loc.data.copy_(-flatten.mean(1).view(1, -1, 1, 1))
                self.scale.data.copy_(1 / (flatten.std(1).view(1, -1, 1, 1) + 1e-6))

        def forward(self, x):
            if self.initialized.item() == 0:
                self.initialize(x)
                self.initialized.fill_(1)
            y = self.scale * (x + self.loc)
            return y * 2 if self.scale.abs().sum().item() > 100 else y

    return ActNorm(2)


@pytest.mark.parametrize("scale", [1.0, 1000.0], ids=["small scale", "large scale"])
def test_export_takes_the_branch_the_weights_take_now_as_torch(scale):
    onnxruntime = require("onnxruntime")
    kiln.manual_seed(0)
    x = (np.random.default_rng(1).standard_normal((3, 2, 4, 4)) * 3 + 1).astype(np.float32)
    model = act_norm(*libraries("kiln"))
    torch, nn, F = libraries("torch")
    twin = act_norm(torch, nn, F)
    model(kiln.tensor(x))  # the data-dependent init, in both
    twin(torch.tensor(x))
    with kiln.no_grad(), torch.no_grad():
        model.scale.mul_(scale)
        twin.scale.mul_(scale)
    file = io.BytesIO()
    kiln.onnx.export(model.eval(), (kiln.tensor(x),), file, input_names=["x"], output_names=["y"])
    got = onnxruntime.InferenceSession(file.getvalue()).run(None, {"x": x})[0]
    with torch.no_grad():
        expected = twin.eval()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert int(model.initialized) == 1


def test_export_still_refuses_a_value_read_from_its_inputs():
    class Scaled(kiln.nn.Module):
        def forward(self, x):
            return x * x.sum().item()

    with pytest.raises(kiln.TraceError, match=r"item\(\) of a traced"):
        kiln.onnx.export(Scaled(), (kiln.ones(2, 3),), io.BytesIO())


def test_a_buffer_read_only_as_a_value_is_no_initializer_of_the_file():
    """ActNorm's ``initialized`` flag becomes the branch taken: the file holds no initializer for it (onnxruntime
    would drop it, warning 'Removing initializer')."""
    onnx = require("onnx")
    kiln.manual_seed(0)
    model = act_norm(*libraries("kiln"))
    model(kiln.randn(3, 2, 4, 4))
    file = io.BytesIO()
    proto = kiln.onnx.export(model.eval(), (kiln.randn(3, 2, 4, 4),), file, input_names=["x"])
    proto = proto if proto is not None else onnx.load_from_string(file.getvalue())
    shapes = sorted(tuple(init.dims) for init in proto.graph.initializer)
    assert shapes == [(1, 2, 1, 1), (1, 2, 1, 1)]  # loc and scale; no 0-d uint8 flag
