"""The demo model in kiln and in PyTorch: identical weights and batches give the same losses and parameters."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from models import MLP, copy_into_torch, digit_batches, torch_mlp
from oracles import require


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_twenty_sgd_steps_match_pytorch(backend):
    torch = require("torch")
    if backend == "onnxruntime":
        require("onnxruntime")
    kiln.manual_seed(1)
    model = MLP()
    reference = torch_mlp(torch)
    copy_into_torch(torch, model, reference)
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1), backend=backend)
    torch_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    batches = digit_batches(20)
    batches[-1] = (batches[-1][0][:17], batches[-1][1][:17])  # a short last batch must not recompile
    for x, y in batches:
        loss = step(x, y)
        torch_optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(reference(torch.tensor(x)), torch.tensor(y))
        torch_loss.backward()
        torch_optimizer.step()
        np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-5)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, reference.state_dict()[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert step.compile_count == 1


def test_state_dict_matches_pytorch_keys_and_shapes_both_ways():
    torch = require("torch")
    model, reference = MLP(), torch_mlp(torch)
    ours = {k: v.shape for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours == theirs
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    np.testing.assert_allclose(kiln.compile(model)(x), reference(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_default_linear_init_matches_pytorch_distribution():
    kiln.manual_seed(0)
    layer = kiln.nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    weight = layer.weight.data
    assert weight.shape == (300, 400) and weight.dtype == np.float32
    assert np.abs(weight).max() <= bound
    # U(-b, b) has mean 0 and variance b^2 / 3
    assert abs(weight.mean()) < 0.01 * bound
    np.testing.assert_allclose(weight.var(), bound**2 / 3, rtol=0.02)
