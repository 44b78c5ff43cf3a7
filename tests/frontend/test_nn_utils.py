"""``kiln.nn.utils``: parameters to and from one vector as PyTorch's, and the clipping helpers' pointers to the
compiled step's options."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require, torch_twins


def test_parameters_to_vector_and_back_as_torch():
    torch = require("torch")
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    reference = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    vector = nn.utils.parameters_to_vector(model.parameters())
    assert isinstance(vector, kiln.Tensor) and vector.requires_grad  # torch's: a tensor, differentiable
    np.testing.assert_array_equal(vector.detach().numpy(), torch.nn.utils.parameters_to_vector(reference.parameters()).detach().numpy())
    with kiln.no_grad():
        vector[...] = kiln.arange(vector.numel())  # a copy: the parameters did not change
    assert not np.array_equal(nn.utils.parameters_to_vector(model.parameters()).detach().numpy(), vector.numpy())
    nn.utils.vector_to_parameters(vector, model.parameters())
    torch.nn.utils.vector_to_parameters(torch.tensor(vector.numpy()), reference.parameters())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, reference.state_dict()[name].numpy(), err_msg=name)
    assert model[0].weight.data.dtype == np.float32


def test_vector_to_parameters_checks_the_size():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="the vector has 7 elements, the parameters 8"):
        nn.utils.vector_to_parameters(np.zeros(7), model.parameters())


def test_clip_grad_value_without_grads_names_the_compiled_steps_option():
    """(``clip_grad_norm_`` without grads returns torch's zero: tests/frontend/test_clip_without_grads.py.)"""
    with pytest.raises(kiln.KilnError, match="pass clip_grad_value=0.5 to kiln.compile_train_step"):
        nn.utils.clip_grad_value_(nn.Linear(2, 2).parameters(), 0.5)


def test_clip_grad_norm_returns_the_total_norm_as_a_tensor_as_torch():
    def net(lib):
        return lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 2)).double()

    torch, model, twin = torch_twins(net)
    x = np.random.default_rng(0).normal(size=(5, 3))
    (model(kiln.tensor(x)) ** 2).sum().backward()
    (twin(torch.tensor(x)) ** 2).sum().backward()
    got = kiln.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    want = torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    assert isinstance(got, kiln.Tensor) and got.shape == () and got.dtype == kiln.float64
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-12)
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12)
