"""``torch.autograd.backward`` inside a ``kiln.autograd.Function``'s backward, as reversible networks call it
(reformer_pytorch's ``ReversibleBlock.backward_pass``, revtorch): the block recomputed under ``enable_grad`` from a
tensor marked ``requires_grad``, whose ``.grad`` the backward reads, and the block's parameters' gradients left in
their ``.grad`` (the Function returns None for them). kiln refused 'backward() of a traced tensor'
(``frontend/custom_function_inner_backward.py``). Against torch 2.13 in float64, eagerly and through
``kiln.compile``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.linspace(-1.0, 1.5, 6).reshape(2, 3)


def reversible_step(torch, nn, twice):
    """``y = x + f(x)`` with ``f`` a Linear run under ``no_grad`` in forward; backward recomputes ``f`` from the
    detached output and calls ``torch.autograd.backward`` (twice: a marked tensor's ``.grad`` and the parameters'
    accumulate, as torch's)."""
    f = nn.Linear(3, 3).double()
    with torch.no_grad():
        f.weight.copy_(torch.tensor(np.arange(9.0).reshape(3, 3) / 10 - 0.3))
        f.bias.fill_(0.1)

    class Reversible(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            with torch.no_grad():
                y = x + f(x)
            ctx.y = y.detach()
            return y

        @staticmethod
        def backward(ctx, dy):
            x = ctx.y.detach() * 0.5
            with torch.enable_grad():
                x.requires_grad = True
                fx = f(x)
                torch.autograd.backward(fx, dy)
                if twice:
                    torch.autograd.backward(f(x).tanh(), dy * 2, retain_graph=True)
            with torch.no_grad():
                dx = dy + x.grad
                x.grad = None
            return dx

    return f, Reversible


@pytest.mark.parametrize("twice", [False, True], ids=["one backward", "two, accumulating"])
def test_backward_inside_a_functions_backward_as_torch(twice):
    results = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        f, Reversible = reversible_step(torch, nn, twice)
        x = torch.tensor(X, requires_grad=True)
        (Reversible.apply(x) ** 2).sum().backward()
        results.append([np.array(t.numpy()) for t in (x.grad, f.weight.grad, f.bias.grad)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("twice", [False, True], ids=["one backward", "two, accumulating"])
def test_compiled_training_step_as_torchs_eager_loop(twice):
    """The whole step (zero_grad, the Function, backward, SGD) one ``kiln.compile(fullgraph=True)`` graph."""
    results = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        f, Reversible = reversible_step(torch, nn, twice)
        scale = nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))  # what reaches the Function requires grad, as in torch
        optimizer = torch.optim.SGD([*f.parameters(), scale], lr=0.1)

        def step(x):
            optimizer.zero_grad()
            loss = (Reversible.apply(x * scale) ** 2).sum()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if name == "kiln" else step
        losses = [run(torch.tensor(X)).item() for _ in range(3)]
        results.append([np.array(losses), *[np.array(p.detach().numpy()) for p in (f.weight, f.bias, scale)]])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
