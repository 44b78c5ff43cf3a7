"""``kiln.onnx.export`` of an eval forward that draws and never reads the draw: Hugging Face's LayerDrop
(``dropout_probability = torch.rand([])``, compared only ``if self.training``; wav2vec 2.0, BART, Whisper). DCE removed
the draw but the ``rng_seed`` graph input stayed, so onnxruntime asked for a seed the model does not use ("Required
inputs (['rng_seed']) are missing"). torch.onnx.export's file asks the model's inputs only; so does kiln's now."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries, require


def layer_drop_net(torch, nn):
    class LayerDropNet(nn.Module):
        def __init__(self, layerdrop=0.5):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
            self.layerdrop = layerdrop

        def forward(self, hidden_states):
            for layer in self.layers:
                dropout_probability = torch.rand([])
                skip_the_layer = True if self.training and (dropout_probability < self.layerdrop) else False
                if not skip_the_layer:
                    hidden_states = layer(hidden_states)
            return hidden_states

    return LayerDropNet()


def test_an_eval_forward_with_an_unread_draw_exports_without_a_seed_input_as_torch(tmp_path):
    onnxruntime = require("onnxruntime")
    kiln.manual_seed(0)
    model = layer_drop_net(kiln, kiln.nn)
    path = str(tmp_path / "layer_drop.onnx")
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    kiln.onnx.export(model, (kiln.tensor(x),), path, input_names=["hidden_states"])
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [given.name for given in session.get_inputs()] == ["hidden_states"]
    (output,) = session.run(None, {"hidden_states": x})
    torch, nn, _ = libraries("torch")
    twin = layer_drop_net(torch, nn).eval()
    twin.load_state_dict({name: torch.tensor(np.array(value)) for name, value in model.state_dict().items()})
    with torch.no_grad():
        expected = twin(torch.tensor(x)).numpy()
    np.testing.assert_allclose(output, expected, rtol=1e-6, atol=1e-6)
