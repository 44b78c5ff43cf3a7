"""``requires_grad = False`` freezes a parameter as in PyTorch, even when the optimizer was given it: no update, no
weight decay, no optimizer state; turning it back on recompiles the step and trains it again."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from oracles import require


def _pair(torch):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    reference = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    return model, reference


def test_a_frozen_layer_stays_put_and_the_rest_trains_as_torch():
    torch = require("torch")
    model, reference = _pair(torch)
    for layer in (model[0], reference[0]):
        layer.weight.requires_grad = False  # fine-tuning: the first weight frozen, its bias and the head train
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1))
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
    frozen = model[0].weight.data.copy()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 6)).astype(np.float32), rng.integers(0, 3, 16)
    for _ in range(5):
        ours = float(step(x, y))
        optimizer.zero_grad()
        theirs = torch.nn.functional.cross_entropy(reference(torch.tensor(x)), torch.tensor(y))
        theirs.backward()
        optimizer.step()
        np.testing.assert_allclose(ours, theirs.item(), rtol=1e-5)
    np.testing.assert_array_equal(model[0].weight.data, frozen)  # not even weight decay touched it
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert id(model[0].weight) not in step.optimizer.state and step.compile_count == 1


def test_unfreezing_recompiles_and_trains_the_parameter_again():
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    model[0].bias.requires_grad = False
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.5))
    x, y = np.ones((4, 6), np.float32), np.array([0, 1, 2, 0])
    bias = model[0].bias.data.copy()
    step(x, y)
    np.testing.assert_array_equal(model[0].bias.data, bias)
    model[0].bias.requires_grad = True
    step(x, y)
    assert step.compile_count == 2 and not np.array_equal(model[0].bias.data, bias)
