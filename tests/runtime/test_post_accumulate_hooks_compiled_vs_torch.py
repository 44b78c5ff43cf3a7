"""``register_post_accumulate_grad_hook`` in a ``kiln.compile``d step: torch's "optimizer in backward" recipe (one
Adam per parameter, stepped and zeroed by the parameter's hook once its gradient is accumulated, the loop calling
only ``loss.backward()``). The step's backward calls the hooks, tracing the optimizers' updates into the step's
graph. Before, a compiled step called no such hook: it silently never trained, and its gradients piled up.

Hooks registered or removed after the first call retrace the step; ``compile_train_step``, which cannot call them,
refuses them, also when registered after its first call (it used to run on without them)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)


def optimizer_in_backward(name, compiled, steps=3, hook_from=0, unhook_from=None):
    """Losses and final weights of ``steps`` steps of torch's recipe; the hooks registered before step ``hook_from``
    and removed before step ``unhook_from``."""
    torch, nn, _ = libraries(name)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for index, p in enumerate(model.parameters()):
            p.copy_(torch.tensor(np.sin(np.arange(p.numel()) + index).reshape(p.shape) / 2))
    optimizers = {p: torch.optim.Adam([p], lr=0.05) for p in model.parameters()}
    order = []

    def hook(p):
        order.append(p.shape)
        optimizers[p].step()
        optimizers[p].zero_grad()

    def step(x):
        loss = (model(x) ** 2).sum()
        loss.backward()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses, handles = [], []
    for index in range(steps):
        if index == hook_from:
            handles = [p.register_post_accumulate_grad_hook(hook) for p in model.parameters()]
        if index == unhook_from:
            for handle in handles:
                handle.remove()
        losses.append(float(run(torch.tensor(X))))
    return losses, [p.detach().numpy().copy() for p in model.parameters()], [p.grad is None for p in model.parameters()]


@pytest.mark.parametrize("timing", [dict(), dict(hook_from=1), dict(hook_from=0, unhook_from=2)],
                         ids=["hooks from the start", "hooks added after the first call", "hooks removed"])
def test_optimizer_in_backward_compiled_as_torch_runs_it(timing):
    ours = optimizer_in_backward("kiln", compiled=True, steps=4, **timing)
    theirs = optimizer_in_backward("torch", compiled=False, steps=4, **timing)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    for mine, expected in zip(ours[1], theirs[1]):
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)
    assert ours[2] == theirs[2]


def test_the_hooks_updates_are_in_the_compiled_graph():
    model = kiln.nn.Linear(3, 2).double()
    optimizers = {p: kiln.optim.SGD([p], lr=0.1) for p in model.parameters()}
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda p: (optimizers[p].step(), optimizers[p].zero_grad()))

    @kiln.compile(fullgraph=True)
    def step(x):
        loss = model(x).sum()
        loss.backward()
        return loss

    step(kiln.tensor(X))
    assert str(step.graph).count("optim.sgd_update") == 2  # one per parameter, from its hook


def test_compile_train_step_refuses_post_accumulate_hooks_also_added_later():
    model = kiln.nn.Linear(3, 3).double()
    step = kiln.compile_train_step(model, lambda out, y: ((out - y) ** 2).mean(), kiln.optim.SGD(model.parameters(), lr=0.1))
    step(X, X)
    handle = model.bias.register_post_accumulate_grad_hook(lambda p: None)
    with pytest.raises(kiln.KilnError, match="cannot call the register_hook or register_post_accumulate_grad_hook hooks of bias"):
        step(X, X)
    handle.remove()
    step(X, X)
    model.weight.register_hook(lambda grad: grad * 0)  # a gradient hook added after the first call too
    with pytest.raises(kiln.KilnError, match="hooks of weight"):
        step(X, X)
