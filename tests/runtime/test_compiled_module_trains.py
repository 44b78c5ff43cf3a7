"""``model = kiln.compile(model)`` in a PyTorch-style training loop, as ``torch.compile``'s module trains: a call on
tensors that need gradients runs eagerly so ``loss.backward()`` reaches the parameters; inference stays compiled."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from oracles import torch_twins


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 16), lib.nn.Tanh(), lib.nn.Linear(16, 3)).double()


def test_a_compiled_module_trains_in_an_eager_loop_as_torch():
    torch, model, twin = torch_twins(_net, seed=4)
    compiled = kiln.compile(model)
    rng = np.random.default_rng(4)
    batches = [(rng.standard_normal((8, 6)), rng.integers(0, 3, 8)) for _ in range(5)]
    with pytest.warns(UserWarning, match="runs eagerly"):
        for net, lib in ((compiled, kiln), (twin, torch)):
            optimizer = lib.optim.SGD((model if lib is kiln else twin).parameters(), lr=0.3, momentum=0.9)
            for x, y in batches:
                optimizer.zero_grad()
                lib.nn.functional.cross_entropy(net(lib.tensor(x)), lib.tensor(y)).backward()
                optimizer.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_inference_calls_stay_compiled_and_warn_nothing():
    kiln.manual_seed(0)
    model = _net(kiln)
    compiled = kiln.compile(model)
    x = np.random.default_rng(0).standard_normal((4, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arrays = compiled(x)  # NumPy in: the compiled function, NumPy out
        with kiln.no_grad():
            compiled(kiln.tensor(x))
        model.eval()
        compiled(kiln.tensor(x))
    assert isinstance(arrays, np.ndarray) and len(compiled.variants) == 1 and not compiled.trained_eagerly
    np.testing.assert_allclose(arrays, model(kiln.tensor(x)).numpy(), rtol=1e-12)


def test_dropout_in_training_mode_needs_no_seed_when_it_trains():
    kiln.manual_seed(1)
    model = kiln.nn.Sequential(kiln.nn.Linear(6, 8), kiln.nn.Dropout(0.5), kiln.nn.Linear(8, 2))
    compiled = kiln.compile(model)
    with pytest.warns(UserWarning, match="runs eagerly"):
        loss = F.mse_loss(compiled(kiln.tensor(np.ones((4, 6), np.float32))), kiln.zeros(4, 2))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
