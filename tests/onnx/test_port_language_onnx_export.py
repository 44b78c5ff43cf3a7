"""``kiln.onnx.export(model, args, f)``, as ``torch.onnx.export``: word_language_model's ``export_onnx`` passes the
recurrent model ``(dummy_input, hidden)`` with ``hidden = (h, c)`` nested. onnxruntime runs the file and agrees with
kiln's eager eval-mode forward and with PyTorch in float64."""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.onnx
from kiln.compiler.errors import KilnError
from oracles import require


def _language_model(nn):
    class LanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.rnn, self.decoder = nn.Embedding(11, 4), nn.LSTM(4, 5, 2, dropout=0.3), nn.Linear(5, 11)

        def forward(self, input, hidden):
            output, hidden = self.rnn(self.encoder(input), hidden)
            return self.decoder(output).view(-1, 11).log_softmax(1), hidden

    return LanguageModel()


def _state(batch):
    rng = np.random.default_rng(batch)
    return rng.normal(size=(2, batch, 5)), rng.normal(size=(2, batch, 5))


def _run(path_or_bytes, feeds):
    onnxruntime = require("onnxruntime")
    return onnxruntime.InferenceSession(path_or_bytes).run(None, feeds)


def test_a_recurrent_model_with_a_nested_state_exports_as_torch_onnx_export_takes_it(tmp_path):
    torch = require("torch")
    kiln.manual_seed(0)
    model = _language_model(nn).double()
    twin = _language_model(torch.nn).double()
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    tokens, (h, c) = np.random.default_rng(0).integers(0, 11, (6, 1)), _state(1)
    proto = kiln.onnx.export(model, (kiln.tensor(tokens), (kiln.tensor(h), kiln.tensor(c))), tmp_path / "lm.onnx")
    assert model.training  # traced in eval mode, left as it was
    assert [i.name for i in proto.graph.input] == ["input", "hidden.0", "hidden.1"]
    assert {"encoder.weight", "rnn.weight_hh_l1", "decoder.bias"} <= {i.name for i in proto.graph.initializer}
    log_probs, h_n, c_n = _run(str(tmp_path / "lm.onnx"), {"input": tokens, "hidden.0": h, "hidden.1": c})
    twin.eval()
    expected, (torch_h, torch_c) = twin(torch.tensor(tokens), (torch.tensor(h), torch.tensor(c)))
    np.testing.assert_allclose(log_probs, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n, torch_h.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_n, torch_c.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_names_dynamic_axes_and_a_file_object():
    kiln.manual_seed(1)
    model = _language_model(nn).double().eval()
    buffer = io.BytesIO()
    kiln.onnx.export(model, (np.zeros((3, 1), np.int64), _state(1)), buffer, input_names=["tokens", "h", "c"],
                     output_names=["log_probs", "h_n", "c_n"], dynamic_axes={name: {1: "batch"} for name in ("tokens", "h", "c")})
    tokens, (h, c) = np.random.default_rng(2).integers(0, 11, (3, 4)), _state(4)
    log_probs, h_n, _ = _run(buffer.getvalue(), {"tokens": tokens, "h": h, "c": c})
    expected, (expected_h, _) = model(kiln.tensor(tokens), (kiln.tensor(h), kiln.tensor(c)))
    np.testing.assert_allclose(log_probs, expected.numpy(), rtol=1e-10)
    np.testing.assert_allclose(h_n, expected_h.numpy(), rtol=1e-10)


def test_mismatched_names_and_a_newer_opset_are_refused():
    model = _language_model(nn)
    with pytest.raises(KilnError, match="2 input_names for 3 input tensors"):
        kiln.onnx.export(model, (np.zeros((3, 1), np.int64), _state(1)), io.BytesIO(), input_names=["a", "b"])
    with pytest.raises(KilnError, match="opset_version=99"):
        kiln.onnx.export(model, (np.zeros((3, 1), np.int64), _state(1)), io.BytesIO(), opset_version=99)
