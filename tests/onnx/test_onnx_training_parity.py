"""50 training steps in onnxruntime match 50 steps in kiln-numpy: losses at every step and final parameters."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from oracles import require


def mlp():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))


MODELS = {"mlp": (mlp, (64,)), "cnn": (cnn, (1, 8, 8))}
OPTIMIZERS = {
    "sgd": lambda params: kiln.optim.SGD(params, lr=0.05),
    "adam": lambda params: kiln.optim.Adam(params, lr=1e-3),
}


def train(backend, model_name, optimizer_name, steps=50):
    build, shape = MODELS[model_name]
    kiln.manual_seed(0)
    model = build()
    step = kiln.compile_train_step(model, F.cross_entropy, OPTIMIZERS[optimizer_name](model.parameters()), backend=backend)
    rng = np.random.default_rng(0)
    losses = [step(rng.standard_normal((8,) + shape).astype(np.float32), rng.integers(0, 10, 8)) for _ in range(steps)]
    return losses, {k: v.copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("model_name, optimizer_name", [("mlp", "sgd"), ("mlp", "adam"), ("cnn", "sgd")])
def test_fifty_steps_in_onnxruntime_match_numpy(model_name, optimizer_name):
    require("onnxruntime")
    losses, params = train("numpy", model_name, optimizer_name)
    ort_losses, ort_params = train("onnxruntime", model_name, optimizer_name)
    np.testing.assert_allclose(ort_losses, losses, rtol=1e-5)
    # Adam moves a weight by up to lr per step whatever the gradient's size, so float noise is scaled by lr
    atol = 1e-3 * 1e-2 if optimizer_name == "adam" else 1e-6
    for name, value in params.items():
        np.testing.assert_allclose(ort_params[name], value, rtol=1e-4, atol=atol, err_msg=name)
