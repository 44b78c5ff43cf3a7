"""``Sequential[a:b]`` is a ``Sequential`` of those layers under their names, as PyTorch's (the neural-style tutorial
trims its model with ``model[:(i + 1)]`` and then calls ``.eval()`` and the model on it)."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
from oracles import require_torch


def _stack(nn):
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.ReLU())


def test_slice_is_a_sequential_with_torch_names_state_dict_and_values():
    torch = require_torch()
    kiln.manual_seed(0)
    model, twin = _stack(nn).double(), _stack(torch.nn).double()
    twin.load_state_dict({name: torch.tensor(np.array(value)) for name, value in model.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(5, 3))
    for index in (slice(None, 3), slice(1, None), slice(None, None, 2), slice(-2, None)):
        part, torch_part = model[index], twin[index]
        assert type(part) is nn.Sequential and part.training
        assert list(part.state_dict()) == list(torch_part.state_dict())
        assert [name for name, _ in part.named_children()] == [name for name, _ in torch_part.named_children()]
    np.testing.assert_allclose(model[:3].eval()(kiln.tensor(x)), twin[:3](torch.tensor(x)).detach().numpy(), rtol=1e-12)


def test_slice_shares_the_layers_and_keeps_named_layers():
    model = nn.Sequential({"conv_1": nn.Conv2d(1, 2, 3), "relu_1": nn.ReLU(), "pool_1": nn.MaxPool2d(2)})
    trimmed = model[:2]
    assert [name for name, _ in trimmed.named_children()] == ["conv_1", "relu_1"]
    assert trimmed.conv_1 is model.conv_1 and model[-1] is model.pool_1 and len(model[5:]) == 0
