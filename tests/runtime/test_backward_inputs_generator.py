"""``loss.backward(inputs=<generator>)`` (``model.head.parameters()``, a comprehension) called on the tensor directly,
as PyTorch's ``tuple(inputs)``: eagerly, with ``create_graph=True``, and in a ``kiln.compile``d training step; only
those parameters receive a gradient. Against torch 2.13, float64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import torch_twins


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(4, 5), lib.nn.Tanh(), lib.nn.Linear(5, 2)).double()


def _loss(lib, model, x):
    return (model(lib.tensor(x)) ** 2).mean()


def _assert_same_grads(model, twin):
    for p, q in zip(model.parameters(), twin.parameters()):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            np.testing.assert_allclose(np.asarray(p.grad), q.grad.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("create_graph", [False, True])
def test_eager_backward_takes_a_generator_of_inputs(create_graph):
    torch, model, twin = torch_twins(_net, seed=2)
    x = np.random.default_rng(0).standard_normal((3, 4))
    _loss(kiln, model, x).backward(inputs=(p for p in model[2].parameters()), create_graph=create_graph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: create_graph=True makes a reference cycle
        _loss(torch, twin, x).backward(inputs=(p for p in twin[2].parameters()), create_graph=create_graph)
    _assert_same_grads(model, twin)
    assert model[0].weight.grad is None and model[2].weight.grad is not None


def test_a_compiled_step_takes_a_generator_of_inputs():
    torch, model, twin = torch_twins(_net, seed=3)
    batches = [np.random.default_rng(seed).standard_normal((3, 4)) for seed in range(3)]

    def step(lib, net, optimizer):
        def train_step(x):
            optimizer.zero_grad()
            loss = (net(x) ** 2).mean()
            loss.backward(inputs=net[0].parameters())
            optimizer.step()
            return loss
        return train_step

    optimizer, twin_optimizer = kiln.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    compiled = kiln.compile(step(kiln, model, optimizer))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # traced, not run eagerly
        losses = [float(compiled(kiln.tensor(x))) for x in batches]
    torch_step = step(torch, twin, twin_optimizer)
    np.testing.assert_allclose(losses, [float(torch_step(torch.tensor(x)).detach()) for x in batches], rtol=1e-12)
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12)
    _assert_same_grads(model, twin)
    assert model[2].weight.grad is None


def test_an_empty_generator_of_inputs_is_refused_as_by_torch():
    torch, model, twin = torch_twins(_net, seed=2)
    x = np.ones((3, 4))
    with pytest.raises(RuntimeError, match="cannot be empty"):
        _loss(torch, twin, x).backward(inputs=(p for p in []))
    with pytest.raises(RuntimeError, match="cannot be empty") as raised:
        _loss(kiln, model, x).backward(inputs=(p for p in []))
    assert isinstance(raised.value, kiln.KilnError)
