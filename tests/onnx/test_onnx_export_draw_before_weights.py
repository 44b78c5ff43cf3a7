"""``kiln.onnx.export`` of a forward that draws before it reads its weights (MAE's ``random_masking``:
``noise = torch.rand(N, L)`` after the patch embedding, before the blocks). The seed input is made at the first draw;
it sat among the weights' graph inputs, so every weight after it was written under its neighbour's name and shape
and onnxruntime refused the file ("Invalid attribute perm {1, 0}, input shape = {3}"). Now the weights keep their
names, and the file fed the documented draw gives torch's outputs for the same noise."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries, require


def noisy_net(torch, nn):
    class NoisyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(4, 3)
            self.second = nn.Linear(3, 2)

        def forward(self, x, noise=None):
            hidden = self.first(x)
            noise = torch.rand(x.shape[0], 3) if noise is None else noise  # the draw, between the two layers
            return self.second(hidden + noise)

    return NoisyNet()


def test_a_draw_between_the_weights_keeps_their_names_and_the_fed_draw_gives_torchs_outputs(tmp_path):
    ort, onnx = require("onnxruntime"), require("onnx")
    kiln.manual_seed(0)
    model = noisy_net(kiln, kiln.nn)
    path = str(tmp_path / "noisy.onnx")
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    kiln.onnx.export(model, (kiln.tensor(x),), path)
    written = onnx.load(path)
    shapes = {tensor.name: tuple(tensor.dims) for tensor in written.graph.initializer if "." in tensor.name}
    assert shapes == {"first.weight": (3, 4), "first.bias": (3,), "second.weight": (2, 3), "second.bias": (2,)}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [given.name for given in session.get_inputs()] == ["x", "rng_seed", "uniform.0"]
    noise = np.random.default_rng(1).random((5, 3), dtype=np.float32)
    (output,) = session.run(None, {"x": x, "rng_seed": np.array(7, np.int64), "uniform.0": noise})
    torch, nn, _ = libraries("torch")
    twin = noisy_net(torch, nn)
    twin.load_state_dict({name: torch.tensor(np.array(value)) for name, value in model.state_dict().items()})
    with torch.no_grad():
        expected = twin(torch.tensor(x), torch.tensor(noise)).numpy()
    np.testing.assert_allclose(output, expected, rtol=1e-6, atol=1e-6)
