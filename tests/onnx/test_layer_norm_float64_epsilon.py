"""ONNX export of a float64 layer norm (and group norm, which kiln writes as one): ONNX's ``LayerNormalization``
carries ``epsilon`` as a float32 attribute, so eps = 1e-5 became 1e-5 - 2.5e-13 and moved a float64 output by ~1e-9
where the variance is small (an xPos RetNet's GroupNorm, ``tests/e2e/test_porting_probes_s4_hyena_retnet.py``).
Such a norm is spelled out with a float64 eps (``backends/onnx/lowering_nn.py``); float32 graphs, and eps that
float32 holds exactly, keep the native op. onnxruntime against torch 2.13."""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from oracles import libraries, require

SMALL_VARIANCE = 1.0 + 1e-3 * np.random.default_rng(0).standard_normal((3, 4, 8))


def _norms(nn, eps):
    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm, self.group_norm = nn.LayerNorm(8, eps=eps), nn.GroupNorm(2, 8, eps=eps)

        def forward(self, x):
            return self.layer_norm(x) + self.group_norm(x.reshape(-1, 8)).reshape(x.shape) * 0.5

    return Norms()


def _exported(model, x):
    onnxruntime = require("onnxruntime")
    buffer = io.BytesIO()
    proto = kiln.onnx.export(model, (kiln.tensor(x),), buffer, input_names=["x"])
    return onnxruntime.InferenceSession(buffer.getvalue()).run(None, {"x": x})[0], {n.op_type for n in proto.graph.node}


def _torchs(eps, model, x):
    torch, nn, _ = libraries("torch")
    twin = _norms(nn, eps).double()
    twin.load_state_dict({key: torch.tensor(np.array(value)) for key, value in model.state_dict().items()})
    return twin(torch.tensor(x)).detach().numpy()


@pytest.mark.parametrize("eps", [1e-5, 1e-7])
def test_a_float64_norm_exports_with_its_float64_epsilon_as_torch(eps):
    kiln.manual_seed(0)
    model = _norms(kiln.nn, eps).double()
    ours, op_types = _exported(model, SMALL_VARIANCE)
    assert "LayerNormalization" not in op_types
    np.testing.assert_allclose(ours, _torchs(eps, model, SMALL_VARIANCE), rtol=1e-10, atol=1e-10)


def test_float32_and_a_float32_exact_epsilon_keep_onnx_layer_normalization():
    kiln.manual_seed(0)
    ours, op_types = _exported(_norms(kiln.nn, 1e-5), SMALL_VARIANCE.astype(np.float32))
    assert "LayerNormalization" in op_types and ours.dtype == np.float32
    model = _norms(kiln.nn, 2.0 ** -20).double()
    ours, op_types = _exported(model, SMALL_VARIANCE)
    assert "LayerNormalization" in op_types
    np.testing.assert_allclose(ours, _torchs(2.0 ** -20, model, SMALL_VARIANCE), rtol=1e-10, atol=1e-10)
