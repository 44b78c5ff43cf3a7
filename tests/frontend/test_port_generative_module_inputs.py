"""Eagerly, a module called on a NumPy batch sees a tensor, as a PyTorch module sees its input: vae/main.py's
``x.view(-1, 784)`` and BatchNorm3d's ``flatten`` run on it (NumPy's ``view`` takes a dtype), with torch's values and
gradients in float64; pre-hooks see the tensor; compiled calls are unchanged."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.frontend.tensor import Tensor
from oracles import require_torch


def _encoder(lib):
    class Encoder(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = lib.nn.Linear(16, 5)

        def forward(self, x):
            return lib.nn.functional.relu(self.fc1(x.view(-1, 16)))

    return Encoder().double()


def test_a_numpy_batch_is_a_tensor_inside_forward_with_torchs_values_and_gradients():
    torch = require_torch()
    ours, theirs = _encoder(kiln), _encoder(torch)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(3, 1, 4, 4))
    out, torch_out = ours(x), theirs(torch.tensor(x))
    np.testing.assert_allclose(np.asarray(out), torch_out.detach().numpy(), rtol=1e-12)
    (out ** 2).sum().backward()
    (torch_out ** 2).sum().backward()
    np.testing.assert_allclose(ours.fc1.weight.grad, theirs.fc1.weight.grad.numpy(), rtol=1e-12)


def test_batch_norm_3d_takes_a_numpy_batch_eagerly():
    torch = require_torch()
    x = np.random.default_rng(1).normal(size=(2, 3, 2, 2, 2))
    ours, theirs = nn.BatchNorm3d(3).double(), torch.nn.BatchNorm3d(3).double()
    np.testing.assert_allclose(np.asarray(ours(x)), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_pre_hooks_see_a_tensor_and_compiled_calls_are_unchanged():
    model, seen = _encoder(kiln), []
    model.register_forward_pre_hook(lambda module, args: seen.append(type(args[0])))
    x = np.ones((2, 1, 4, 4))
    eager = model(x)
    assert seen == [Tensor]
    np.testing.assert_allclose(kiln.compile(model)(x), np.asarray(eager), rtol=1e-12)
    step = kiln.compile_train_step(model, lambda out, y: F.mse_loss(out, y), kiln.optim.SGD(model.parameters(), lr=0.1))
    assert np.isfinite(step(x, np.zeros((2, 5))))
