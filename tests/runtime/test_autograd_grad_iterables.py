"""``kiln.autograd.grad`` and ``backward`` take any iterable of tensors, as PyTorch's ``tuple(inputs)``: a generator
(``model.parameters()``), a dict's ``.values()`` (MAML's ``params``), a tuple, one tensor; compared with torch in float64,
eager and with ``create_graph=True``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import torch_twins

ITERABLES = {
    "generator": lambda model: model.parameters(),
    "dict values": lambda model: dict(model.named_parameters()).values(),
    "map": lambda model: map(lambda p: p, model.parameters()),
    "tuple": lambda model: tuple(model.parameters()),
}


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 1)).double()


def _loss(lib, model):
    x = lib.tensor(np.linspace(-1, 1, 15).reshape(5, 3))
    return model(x).pow(2).mean()


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("kind", sorted(ITERABLES))
def test_grad_takes_any_iterable_of_inputs_as_torch(kind, create_graph):
    torch, model, twin = torch_twins(_net)
    ours = kiln.autograd.grad(_loss(kiln, model), ITERABLES[kind](model), create_graph=create_graph)
    theirs = torch.autograd.grad(_loss(torch, twin), ITERABLES[kind](twin), create_graph=create_graph)
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_second_order_through_grads_of_dict_values_as_torch():
    """MAML's inner step: ``params - lr * grad(loss, params.values(), create_graph=True)``, then the outer loss."""
    torch, model, twin = torch_twins(_net)
    results = []
    for lib, net in ((kiln, model), (torch, twin)):
        params = dict(net.named_parameters())
        grads = lib.autograd.grad(_loss(lib, net), params.values(), create_graph=True)
        fast = {name: p - 0.5 * g for (name, p), g in zip(params.items(), grads)}
        outer = lib.func.functional_call(net, fast, (lib.tensor(np.ones((2, 3))),)).sum()
        outer.backward()
        results.append([p.grad for p in net.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-12, atol=1e-14)


def test_backward_takes_a_generator_of_tensors_and_of_inputs_as_torch():
    torch, model, twin = torch_twins(_net)
    for lib, net in ((kiln, model), (torch, twin)):
        losses = (_loss(lib, net) * k for k in (1.0, 2.0))
        lib.autograd.backward(losses, inputs=(p for p in net.parameters()))
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_a_lone_array_seed_stays_one_seed():
    """A NumPy array for ``grad_outputs`` (kiln takes one where torch needs a tensor) is one output's seed, not rows."""
    _, model, _ = torch_twins(_net)
    out = model(kiln.tensor(np.ones((5, 3))))
    (g,) = kiln.autograd.grad(out, model[0].bias, grad_outputs=np.ones((5, 1)))
    assert g.shape == (4,)
