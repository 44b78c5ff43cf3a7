"""A model built and initialised in kiln, saved with ``kiln.save(model.state_dict(), "model.pt")``, deploys in PyTorch:
``torch.load`` (weights_only=True) gives a state dict that the same architecture built in torch loads with
``strict=True`` (every key, shape and dtype), and the torch model computes kiln's outputs (eval mode). Layers whose
state has structure: recurrent stacks (bidirectional, projected), attention's packed projections, normalisation
buffers, weight_norm/spectral_norm's reparametrisations."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch


def _layers(nn):
    return {
        "conv_bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.ConvTranspose2d(4, 2, 3, stride=2)), [(2, 3, 5, 5)]),
        "norms": (lambda: nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.RMSNorm(6), nn.PReLU(6)), [(2, 4)]),
        "instance_norm": (lambda: nn.Sequential(nn.GroupNorm(2, 4), nn.InstanceNorm1d(4, affine=True, track_running_stats=True)), [(2, 4, 5)]),
        "lstm": (lambda: nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True), [(2, 3, 4)]),
        "lstm_projected": (lambda: nn.LSTM(4, 5, proj_size=3, batch_first=True), [(2, 3, 4)]),
        "gru": (lambda: nn.GRU(4, 5, batch_first=True), [(2, 3, 4)]),
        "attention": (lambda: nn.MultiheadAttention(8, 2, batch_first=True), [(2, 3, 8)] * 3),
        "encoder_layer": (lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), [(2, 3, 8)]),
        "decoder_layer": (lambda: nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True), [(2, 3, 8), (2, 4, 8)]),
        "bilinear": (lambda: nn.Bilinear(3, 4, 2), [(2, 3), (2, 4)]),
        "weight_norm": (lambda: nn.utils.parametrizations.weight_norm(nn.Linear(4, 3)), [(2, 4)]),
        "spectral_norm": (lambda: nn.utils.spectral_norm(nn.Linear(4, 3)), [(2, 4)]),
    }


def _outputs(lib, model, shapes):
    rng = np.random.default_rng(1)
    result = model(*(lib.tensor(rng.standard_normal(shape).astype(np.float32)) for shape in shapes))
    while isinstance(result, (tuple, list)):
        result = result[0]
    return result.detach().numpy() if hasattr(result, "detach") else np.asarray(result)


@pytest.mark.parametrize("name", list(_layers(libraries("kiln")[1])))
def test_a_kiln_state_dict_loads_strictly_into_the_torch_model_and_computes_the_same(name, tmp_path):
    torch = require_torch()
    make, shapes = _layers(libraries("kiln")[1])[name]
    kiln.manual_seed(0)
    model = make().eval()
    kiln.save(model.state_dict(), tmp_path / "model.pt")
    make_twin, _ = _layers(torch.nn)[name]
    twin = make_twin().eval()
    twin.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
    with torch.no_grad():
        np.testing.assert_allclose(_outputs(kiln, model, shapes), _outputs(torch, twin, shapes), rtol=1e-5, atol=1e-5)
