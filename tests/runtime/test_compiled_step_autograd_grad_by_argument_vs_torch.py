"""``torch.autograd.grad(out, x)`` inside a ``kiln.compile``d whole training step, by an argument ``x`` that requires
grad (a leaf made with ``requires_grad=True``, as PINN and EBM code makes its inputs), against PyTorch 2.13's eager
step. The whole-step trace took such an argument as a tensor that requires no grad, so ``autograd.grad`` by it raised
"One of the differentiated Tensors does not require grad ... mark it with requires_grad_()" about a tensor that does;
the argument now requires grad in the trace as it does at the call (``runtime/step_capture.py``). Where the loss then
reaches it, the step fills its ``.grad``, as a leaf of the step's own (``frontend/whole_step_inputs.py``)."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries


def _energy_matching(name, compiled, create_graph, fullgraph=True):
    """Fit a model's input gradient to a target field: the step takes ``g = autograd.grad(model(x).sum(), x)`` and,
    without ``create_graph``, a loss on ``model(x.detach())`` that uses ``g`` as a constant (the loss does not reach
    ``x``); with it, ``((g - target) ** 2).mean()`` (the loss reaches ``x``: refused when compiled)."""
    torch, nn, F = libraries(name)
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1))
    for p in model.parameters():
        p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.tensor(rng.standard_normal((6, 2)), requires_grad=True)
    target = torch.tensor(rng.standard_normal((6, 2)))

    def step(x):
        optimizer.zero_grad()
        g = torch.autograd.grad(model(x).sum(), x, create_graph=create_graph)[0]
        if create_graph:
            loss = ((g - target) ** 2).mean()
        else:
            loss = ((model(x.detach()) - (g * target).sum(1, keepdim=True)) ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    run = kiln.compile(step, fullgraph=fullgraph) if compiled else step
    losses = [run(x).item() for _ in range(3)]
    return losses, [p.detach().numpy().copy() for p in model.parameters()], x.grad


def test_autograd_grad_by_an_argument_that_requires_grad_in_a_compiled_step(float64_default):
    theirs = _energy_matching("torch", compiled=False, create_graph=False)
    ours = _energy_matching("kiln", compiled=True, create_graph=False)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    for mine, expected in zip(ours[1], theirs[1], strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)
    assert ours[2] is None and theirs[2] is None  # the loss does not reach x: no gradient for it, as torch


def test_a_loss_through_the_argument_gradient_fills_its_grad_as_torch(float64_default):
    """With ``create_graph`` the loss reaches ``x``, a leaf argument: the compiled step fills ``x.grad`` and adds to it
    at each call (fed the ``.grad`` it holds from the second call on), as torch's eager step."""
    theirs = _energy_matching("torch", compiled=False, create_graph=True)
    ours = _energy_matching("kiln", compiled=True, create_graph=True)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    for mine, expected in zip(ours[1], theirs[1], strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours[2].numpy(), theirs[2].numpy(), rtol=1e-12)
