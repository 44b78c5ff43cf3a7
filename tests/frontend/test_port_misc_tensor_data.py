"""``tensor.data`` on a tensor that is not a parameter, as PyTorch's: the values without the graph (the old
reinforce.py's ``action.data``, ``output.data.max(1)``), eagerly and traced; a write through it writes the tensor, as torch's (they share the storage)."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import require

X = np.array([[0.5, -1.5, 2.0], [1.0, 0.25, -0.75]])


def test_data_has_the_values_and_stops_the_gradient_as_torchs():
    torch = require("torch")
    w = kiln.tensor(X, requires_grad=True)
    torch_w = torch.tensor(X, requires_grad=True)
    ours, theirs = w * w, torch_w * torch_w
    (ours * ours.data).sum().backward()  # d/dw (w^2 * c) with c = w^2 held constant: 2 w c
    (theirs * theirs.data).sum().backward()
    np.testing.assert_allclose(w.grad, torch_w.grad.numpy(), rtol=1e-13)
    assert ours.data.max(1)[1].tolist() == theirs.data.max(1)[1].tolist()
    assert not ours.data.requires_grad and not theirs.data.requires_grad


def test_data_in_a_trace_is_a_constant_to_the_gradient():
    torch = require("torch")
    gradient = kiln.grad(lambda w: (w.exp() * w.exp().data).sum())(X)
    torch_w = torch.tensor(X, requires_grad=True)
    (torch_w.exp() * torch_w.exp().data).sum().backward()
    np.testing.assert_allclose(gradient, torch_w.grad.numpy(), rtol=1e-13)


def test_a_write_through_data_writes_the_tensor_as_torch():
    y = kiln.tensor(X) * 2.0
    y.data.zero_()
    np.testing.assert_array_equal(np.asarray((y + 1).numpy()), np.ones_like(X))  # torch's y.data shares y's storage


def test_a_parameters_data_is_still_its_array():
    parameter = kiln.nn.Parameter(X.copy())
    assert isinstance(parameter.data, np.ndarray)
    np.testing.assert_array_equal(parameter.data, X)
