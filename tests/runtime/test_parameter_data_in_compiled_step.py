"""``p.data`` inside a ``kiln.compile``d function stands for the parameter's traced value without a gradient, as in
PyTorch: an EMA written ``e.data.mul_(0.9).add_(p.data, alpha=0.1)`` averages the weights of each call, and
``x * p.data`` reads the weight of each call. Both read the values the parameter had when traced (constants of the
graph), silently stale from the second call on (found by R5's DQN probe)."""

from __future__ import annotations

import warnings

import numpy as np

import kiln
from oracles import require_torch


def _ema_run(lib, compiled, steps=4):
    model = lib.nn.Linear(2, 2).double()
    ema = lib.nn.Linear(2, 2).double()
    with lib.no_grad():
        model.weight.copy_(lib.tensor([[1.0, 2.0], [-0.5, 0.3]]))
        model.bias.copy_(lib.tensor([0.1, -0.2]))
        for e in ema.parameters():
            e.zero_()
    optimizer = lib.optim.SGD(model.parameters(), lr=0.1)

    def step(x):
        optimizer.zero_grad()
        loss = (model(x) * model.weight.data[0]).square().sum()  # p.data as an operand: no gradient through it
        loss.backward()
        optimizer.step()
        with lib.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.data.mul_(0.9).add_(p.data, alpha=0.1)
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses = [float(run(lib.tensor(np.array([[1.0, 0.5], [0.2, -1.0]]) * (k + 1)))) for k in range(steps)]
    return losses, [np.array(p.detach().numpy()) for p in [*model.parameters(), *ema.parameters()]]


def test_an_ema_through_data_and_data_as_an_operand_follow_each_call_as_torch():
    torch = require_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled, not eagerly
        ours = _ema_run(kiln, compiled=True)
    theirs = _ema_run(torch, compiled=False)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    for mine, other in zip(ours[1], theirs[1]):
        np.testing.assert_allclose(mine, other, rtol=1e-12, atol=1e-15)


def test_data_outside_a_trace_is_still_the_parameters_array():
    p = kiln.nn.Parameter(kiln.ones(3))
    p.data.mul_(2.0)
    np.testing.assert_array_equal(np.asarray(p.data), [2.0, 2.0, 2.0])
    assert isinstance(p.data, np.ndarray)
