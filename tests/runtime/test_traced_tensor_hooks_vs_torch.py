"""``register_hook`` on a traced tensor inside a ``kiln.compile(fullgraph=True)`` training step: the backward traced
after it calls the hook on the tensor's complete gradient, its ops in the step's graph (``frontend/traced_hooks.py``),
as torch's autograd calls it. MuZero's ``hidden_state.register_hook(lambda grad: grad * 0.5)`` in an unrolled
dynamics loop and its per-sample ``loss.register_hook(lambda grad: grad / scale)`` (a traced input the hook closes
over), in lockstep with torch 2.13 for three SGD steps; hooks in order, a hook that only looks (returns None), a
removed hook, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
SCALE = np.array([2.0, 4.0])


def train(name, hooks, compiled, steps=3):
    torch, nn, _ = libraries(name)
    torch.manual_seed(0)
    cell = nn.Linear(3, 3).double()
    with torch.no_grad():
        cell.weight.copy_(torch.tensor(np.arange(9.0).reshape(3, 3) / 10 - 0.4))
        cell.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    opt = torch.optim.SGD(cell.parameters(), lr=0.1)

    def step(x, scale):
        opt.zero_grad()
        hidden, total = x, 0
        for _ in range(3):  # MuZero's unrolled dynamics
            hidden = torch.tanh(cell(hidden))
            hooks(hidden, scale)
            total = total + (hidden ** 2).sum(1)
        loss = total.sum()
        loss.backward()
        opt.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses = [float(run(torch.tensor(X), torch.tensor(SCALE)).detach()) for _ in range(steps)]
    return losses, cell.weight.detach().numpy().copy(), cell.bias.detach().numpy().copy()


def halve(hidden, scale):
    hidden.register_hook(lambda grad: grad * 0.5)


def per_sample(hidden, scale):
    hidden.register_hook(lambda grad: grad / scale[:, None])  # closes over a traced input


def in_order(hidden, scale):
    hidden.register_hook(lambda grad: grad * 2)
    hidden.register_hook(lambda grad: grad + 1)  # (2 g) + 1, not 2 (g + 1)


def looking(hidden, scale):
    hidden.register_hook(lambda grad: None)


def removed(hidden, scale):
    hidden.register_hook(lambda grad: grad * 100).remove()


@pytest.mark.parametrize("hooks", [halve, per_sample, in_order, looking, removed], ids=lambda f: f.__name__)
def test_hooks_in_a_compiled_step_train_as_torchs(hooks):
    theirs = train("torch", hooks, compiled=False)
    ours = train("kiln", hooks, compiled=True)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_the_hook_changes_the_step():
    plain = train("kiln", lambda hidden, scale: None, compiled=True)
    assert not np.allclose(plain[1], train("kiln", halve, compiled=True)[1])


def test_a_hook_that_changes_the_gradients_shape_is_refused_at_its_line():
    lin = kiln.nn.Linear(3, 3).double()

    def step(x):
        h = lin(x)
        h.register_hook(lambda grad: grad.sum(0))
        h.sum().backward()
        return h.sum()

    with pytest.raises(kiln.KilnError, match=r"gradient hook .<lambda>. changed the gradient.s shape from \(2, 3\) to \(3,\)"):
        kiln.compile(step, fullgraph=True)(kiln.tensor(X))


def test_a_tensor_needing_no_gradient_refuses_a_hook():
    def step(x):
        x.register_hook(lambda grad: grad)
        return x

    with pytest.raises(kiln.KilnError, match="does not require a gradient"):
        kiln.compile(step, fullgraph=True)(kiln.tensor(X))


def clipped_steps(name):
    """A parameter hook (``p.register_hook(lambda g: g.clamp(-0.1, 0.1))``, registered after the first step and
    removed after the third) around a compiled SGD step: the hook clamps the gradients of exactly steps 2 and 3."""
    torch, nn, _ = libraries(name)
    lin = nn.Linear(3, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(np.arange(6.0).reshape(2, 3) / 5 - 0.5))
        lin.bias.zero_()
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)

    def step(x):
        opt.zero_grad()
        loss = (lin(x) ** 2).sum()
        loss.backward()
        opt.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if name == "kiln" else step
    weights, handle = [], None
    for index in range(4):
        if index == 1:
            handle = lin.weight.register_hook(lambda grad: grad.clamp(-0.1, 0.1))
        if index == 3:
            handle.remove()
        run(torch.tensor(X))
        weights.append(lin.weight.detach().numpy().copy())
    return weights


def test_a_parameters_hook_runs_in_the_compiled_backward_and_its_changes_retrace():
    # kiln compiled the step without the hook and then ignored hooks registered on parameters: a silent wrong step
    for ours, theirs in zip(clipped_steps("kiln"), clipped_steps("torch")):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_hooks_where_no_traced_backward_can_call_them_are_refused():
    lin = kiln.nn.Linear(3, 3).double()

    def forward(x):  # a compiled forward: the backward is differentiated elsewhere
        h = lin(x)
        h.register_hook(lambda grad: grad * 2)
        return h

    with pytest.raises(kiln.KilnError, match="outside a kiln.compile'd step that calls backward"):
        kiln.compile(forward, fullgraph=True)(kiln.tensor(X))
    handle = lin.weight.register_hook(lambda grad: grad * 0)
    step = kiln.compile_train_step(lin, lambda out, y: ((out - y) ** 2).mean(), kiln.optim.SGD(lin.parameters(), lr=0.1))
    with pytest.raises(kiln.KilnError, match="cannot call the register_hook or register_post_accumulate_grad_hook hooks of weight"):
        step(X, X)
    handle.remove()
    step(X, X)



def test_autograd_grad_in_a_compiled_step_calls_the_hooks():
    # a gradient penalty: torch calls h's hook in autograd.grad, and again in the backward through h
    results = []
    for name in ("kiln", "torch"):
        torch, nn, _ = libraries(name)
        lin = nn.Linear(3, 3).double()
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(np.arange(9.0).reshape(3, 3) / 10 - 0.4))
            lin.bias.zero_()
        opt = torch.optim.SGD(lin.parameters(), lr=0.1)

        def step(x):
            opt.zero_grad()
            u = lin(x)
            h = torch.tanh(u)
            h.register_hook(lambda grad: grad * 0.25)
            (g,) = torch.autograd.grad(h.sum(), u, create_graph=True)
            loss = (g ** 2).sum() + h.sum()
            loss.backward()
            opt.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if name == "kiln" else step
        results.append([float(run(torch.tensor(X)).detach()) for _ in range(2)] + [lin.weight.detach().numpy().copy()])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)  # a weight at 0 (1e-18) after the step
