"""A parameter's ``.grad`` and ``.data`` (NumPy arrays in kiln, ``frontend/torch_array.py``) where PyTorch code treats
them as tensors: ``torch.is_tensor``, ``torch.cat``/``stack`` of gradients, ``randn_like(p.grad)``, the functions that
forward to a method NumPy also has (``torch.dot``, ``torch.sum``), and printing."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require


def _pair():
    torch = require("torch")
    kiln.manual_seed(0)
    ours = nn.Linear(3, 2).double()
    theirs = torch.nn.Linear(3, 2).double()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 3))
    (ours(kiln.tensor(x)) ** 2).sum().backward()
    (theirs(torch.from_numpy(x)) ** 2).sum().backward()
    return torch, ours, theirs


def test_gradients_flatten_join_and_count_as_tensors_as_torchs():
    torch, ours, theirs = _pair()
    assert kiln.is_tensor(ours.weight.grad) and kiln.is_tensor(ours.weight.data) and not kiln.is_tensor(np.zeros(2))
    flat = kiln.cat([p.grad.view(-1) for p in ours.parameters()])
    np.testing.assert_allclose(np.array(flat), torch.cat([p.grad.view(-1) for p in theirs.parameters()]).numpy(), rtol=1e-12)
    stacked = kiln.stack([ours.bias.grad, ours.bias.grad], dim=1)
    np.testing.assert_allclose(np.array(stacked), torch.stack([theirs.bias.grad] * 2, dim=1).numpy(), rtol=1e-12)
    dot = kiln.dot(ours.bias.grad, ours.bias.grad)
    assert isinstance(dot, kiln.Tensor)
    np.testing.assert_allclose(dot.item(), torch.dot(theirs.bias.grad, theirs.bias.grad).item(), rtol=1e-12)
    assert isinstance(kiln.sum(ours.weight.grad), kiln.Tensor)


@pytest.mark.parametrize("like", ["randn_like", "rand_like"])
def test_random_draws_like_a_gradient_take_its_shape_and_dtype(like):
    _, ours, _ = _pair()
    draw = getattr(kiln, like)(ours.weight.grad)
    assert tuple(draw.shape) == (2, 3) and draw.dtype is kiln.float64
    before = np.array(ours.weight.grad)
    ours.weight.grad.add_(draw * 0.01)  # gradient noise, in place
    np.testing.assert_allclose(np.array(ours.weight.grad), before + 0.01 * np.array(draw), rtol=1e-12)


def test_gradients_and_data_print_as_torchs():
    torch, ours, theirs = _pair()
    for mine, reference in ((ours.weight.grad, theirs.weight.grad), (ours.bias.data, theirs.bias.data)):
        assert repr(mine) == repr(reference).replace("torch.", "kiln.")
        assert str(mine) == str(reference).replace("torch.", "kiln.")
