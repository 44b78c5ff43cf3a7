"""``torch.autograd.functional.{jacobian,hessian,vjp,jvp,hvp,vhp}`` inside a ``kiln.compile(fullgraph=True)``d function,
against torch 2.13's eager results: with ``create_graph=True`` (a PINN's ``hessian(lambda X: net(X).sum(), X,
create_graph=True)`` in its training step) and without. kiln's graph-keeping forms required eager tensors and its
compiled transforms read arrays, so inside a trace most failed with "np.asarray() of a traced tensor"; the graph-keeping
forms now read traced tensors, and ``vjp``/``jvp``/``hvp``/``vhp`` are traced as them (detached without
``create_graph``) (``runtime/autograd_functional.py``, ``runtime/autograd_functional_graph.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.random.default_rng(0).standard_normal((4, 2))
FUNCTIONS = ("jacobian", "hessian", "vjp", "jvp", "hvp", "vhp")


def _program(name, function, create_graph):
    torch = libraries(name)[0]
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.7]]))
        layer.bias.fill_(0.1)
    F = torch.autograd.functional
    v = torch.tensor(np.cos(np.arange(8.0)).reshape(4, 2))

    def scalar(points):
        return torch.tanh(layer(points)).pow(2).sum()

    def vector(points):
        return torch.tanh(layer(points))

    def evaluate(points):
        if function == "jacobian":
            return F.jacobian(lambda p: vector(p).sum(0), points, create_graph=create_graph)
        if function == "hessian":
            return F.hessian(scalar, points, create_graph=create_graph).sum((2, 3))
        if function == "vjp":
            return F.vjp(vector, points, torch.ones(4, 1), create_graph=create_graph)[1]
        if function == "jvp":
            return F.jvp(vector, points, v, create_graph=create_graph)[1]
        return getattr(F, function)(scalar, points, v, create_graph=create_graph)[1]

    return evaluate


@pytest.mark.parametrize("create_graph", [False, True], ids=["plain", "create_graph"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_autograd_functional_inside_a_compiled_function(function, create_graph, float64_default):
    torch = libraries("torch")[0]
    theirs = _program("torch", function, create_graph)(torch.tensor(X))
    ours = kiln.compile(_program("kiln", function, create_graph), fullgraph=True)(kiln.tensor(X))
    assert ours.requires_grad == theirs.requires_grad
    np.testing.assert_allclose(np.array(ours.detach().numpy()), theirs.detach().numpy(), rtol=1e-12, atol=1e-15)


def test_a_compiled_step_trains_through_a_hessian_with_create_graph(float64_default):
    """A loss on each point's Laplacian from ``hessian(..., create_graph=True)``: its backward reaches the weights."""
    results = []
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        rng = np.random.default_rng(1)
        net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
        for p in net.parameters():
            p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05)

        def step(points):
            H = torch.autograd.functional.hessian(lambda p: net(p).sum(), points, create_graph=True)
            laplacian = torch.einsum("iaia->i", H)
            loss = (laplacian ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if name == "kiln" else step
        losses = [run(torch.tensor(X)).item() for _ in range(3)]
        results.append(losses + [np.array(p.detach().numpy()) for p in net.parameters()])
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
