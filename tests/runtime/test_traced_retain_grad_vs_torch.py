"""``retain_grad()`` on an intermediate inside a ``kiln.compile(fullgraph=True)``'d training step: each ``backward()``
traced after it adds the intermediate's complete gradient to its ``.grad`` (past its hooks: torch's retains-grad hook
runs last), a constant to later backwards unless ``create_graph=True``. Before, the trace ignored the call and
``h.grad`` stayed None in the compiled step where torch's eager step had it. Compared with torch 2.13 eager."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)


def run(name, body, compiled, steps=2):
    """``steps`` SGD steps of ``body(torch, model, x)`` (it calls backward and returns what to compare) on a fixed
    ``Linear(3, 2)``; the results of the last step and the final weights."""
    torch, nn, _ = libraries(name)
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(np.arange(6.0).reshape(2, 3) / 10 - 0.2))
        model.bias.copy_(torch.tensor([0.1, -0.3]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(x):
        optimizer.zero_grad()
        results = body(torch, model, x)
        optimizer.step()
        return results

    call = kiln.compile(step, fullgraph=True) if compiled else step
    for _ in range(steps):
        results = call(torch.tensor(X))
    return [r.detach().numpy() for r in results] + [p.detach().numpy() for p in model.parameters()]


def retained(torch, model, x):
    h = model(x)
    h.retain_grad()
    loss = (torch.tanh(h) ** 2).sum()
    loss.backward()
    return loss, h.grad


def retained_past_a_hook(torch, model, x):
    h = model(x)
    h.retain_grad()
    h.register_hook(lambda g: g * 3)  # registered after retain_grad, still seen by it
    (h ** 2).sum().backward()
    return (h.grad,)


def two_backwards(torch, model, x):
    h = model(x)
    h.retain_grad()
    loss = (h ** 3).sum()
    loss.backward(retain_graph=True)
    (2 * h.sum()).backward()  # adds to h.grad, as to the parameters' .grad
    return (h.grad,)


def penalty_through_the_retained_grad(torch, model, x):
    h = torch.tanh(model(x))
    h.retain_grad()
    loss = (h ** 2).sum()
    loss.backward(create_graph=True)
    penalty = (h.grad ** 2).sum()  # h.grad keeps its graph: its backward reaches the weights
    penalty.backward()
    return penalty, h.grad


@pytest.mark.parametrize("body", [retained, retained_past_a_hook, two_backwards, penalty_through_the_retained_grad],
                         ids=lambda body: body.__name__)
def test_retain_grad_in_a_compiled_step_as_torch_eager(body):
    ours, theirs = run("kiln", body, compiled=True), run("torch", body, compiled=False)
    for mine, expected in zip(ours, theirs):
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)


def test_retains_grad_reads_true_in_the_trace():
    model = kiln.nn.Linear(3, 2).double()
    seen = []

    @kiln.compile(fullgraph=True)
    def step(x):
        h = model(x)
        seen.append(h.retains_grad)
        h.retain_grad()
        seen.append(h.retains_grad)
        h.sum().backward()
        return h.grad

    step(kiln.tensor(X))
    assert seen == [False, True]


def test_retain_grad_without_a_gradient_is_refused_as_torch():
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        with pytest.raises(RuntimeError, match="retain_grad on .*(tensor that does not require|requires_grad=False)"):
            torch.ones(2).retain_grad()

    @kiln.compile(fullgraph=True)
    def traced(x):
        x.retain_grad()
        return x * 2

    with pytest.raises(RuntimeError, match="can't retain_grad on a tensor that does not require a gradient"):
        traced(kiln.tensor(X))


def test_retain_grad_in_a_compiled_forward_is_refused():
    model = kiln.nn.Linear(3, 2).double()

    def forward(x):
        h = model(x)
        h.retain_grad()
        return h

    with pytest.raises(kiln.KilnError, match="retain_grad on a traced tensor outside a kiln.compile'd step"):
        kiln.compile(forward, fullgraph=True)(kiln.tensor(X))
