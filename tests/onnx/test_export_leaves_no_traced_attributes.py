"""``kiln.onnx.export`` of a model whose forward stores a tensor it computed on a module (the neural-style tutorial's
loss modules: ``self.loss = F.mse_loss(input, self.target)``, then ``return input``): the export's trace ran on
symbolic inputs, so that tensor had no values outside it, and the module kept it (``float(style_loss.loss)`` after the
export raised a TypeError from deep inside kiln). Now the attribute gets back its value from before the export (or
stays unset); the file still runs in onnxruntime as torch's model (float32). torch's TorchScript exporter runs the
forward on the example input and leaves that input's loss there; kiln's trace has no values to leave."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries, require, require_torch

IMAGE = np.linspace(0.0, 1.0, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)


def _model(lib, nn, F):
    class ContentLoss(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target.detach()

        def forward(self, input):
            self.loss = F.mse_loss(input, self.target)
            return input

    class Tagged(nn.Module):
        """A forward that records its last output on itself, never set before the export."""

        def forward(self, x):
            self.last = x * 2
            return self.last

    lib.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    loss = ContentLoss(conv(lib.tensor(IMAGE[::-1].copy())))
    return nn.Sequential(conv, loss, nn.ReLU(), Tagged()), loss


def test_an_attribute_set_to_a_traced_tensor_gets_its_value_from_before_the_export(tmp_path):
    torch = require_torch()
    onnxruntime = require("onnxruntime")
    model, loss = _model(*libraries("kiln"))
    twin, _ = _model(*libraries("torch"))
    twin.load_state_dict({key: torch.tensor(np.array(value)) for key, value in model.state_dict().items()})
    model(kiln.tensor(IMAGE))
    before = float(loss.loss)
    path = str(tmp_path / "style.onnx")
    kiln.onnx.export(model, (kiln.tensor(IMAGE),), path, input_names=["image"], output_names=["features"])
    assert float(loss.loss) == before  # a real tensor, as before the export
    assert "last" in model[3].__dict__ and float(model[3].last.sum()) > 0  # set by the eager call above, kept
    (features,) = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": IMAGE})
    with torch.no_grad():
        np.testing.assert_allclose(features, twin(torch.tensor(IMAGE)).numpy(), rtol=1e-5, atol=1e-6)


def test_an_attribute_first_set_by_the_export_stays_unset(tmp_path):
    model, loss = _model(*libraries("kiln"))
    kiln.onnx.export(model, (kiln.tensor(IMAGE),), str(tmp_path / "style.onnx"))
    assert "last" not in model[3].__dict__ and "loss" not in loss.__dict__
    model(kiln.tensor(IMAGE))  # an eager call sets them, with values
    assert float(loss.loss) > 0 and model[3].last.shape == (2, 3, 4, 4)
