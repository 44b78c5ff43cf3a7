"""``p.data = torch.clamp(p.data, lo, hi)`` after ``optimizer.step()`` inside a ``kiln.compile``'d training step (CLIP's
logit-scale clamp in its ``.data`` spelling, WGAN's weight clipping) writes the parameter at every call, as the eager
loop in PyTorch 2.13 does; it was a TraceError (``numpy()`` of a traced tensor), so the step could not compile."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def train(lib, compiled, steps=5):
    scale = lib.nn.Parameter(lib.tensor(1.0))
    layer = lib.nn.Linear(3, 3)
    layer.weight.data = lib.tensor(np.eye(3) + 0.1 * np.arange(9.0).reshape(3, 3))
    layer.bias.data = lib.tensor([0.1, -0.2, 0.3])
    optimizer = lib.optim.Adam([scale, *layer.parameters()], lr=0.4)

    def step(x, y):
        optimizer.zero_grad()
        loss = lib.nn.functional.cross_entropy(scale.exp() * layer(x), y)
        loss.backward()
        optimizer.step()
        scale.data = lib.clamp(scale.data, 0, 1.9)  # bites from the third step on
        layer.weight.data = layer.weight.data.clamp(-1.05, 1.05)
        return loss.detach()

    run = kiln.compile(step, fullgraph=True) if lib is kiln and compiled else step
    x, y = lib.tensor(2.0 * np.eye(3)[[0, 1, 2, 1]]), lib.tensor([0, 1, 2, 1])  # learnable: the scale grows
    losses, scales = [], []
    for _ in range(steps):
        losses.append(float(run(x, y)))
        scales.append(float(scale.detach()))
    return losses, scales, np.array(layer.weight.detach().numpy())


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_data_assignment_clamps_as_torch(compiled, float64_default):
    torch = require_torch()
    ours, theirs = train(kiln, compiled), train(torch, compiled)
    for mine, other in zip(ours, theirs):
        np.testing.assert_allclose(mine, other, rtol=1e-12, atol=1e-14)
    assert theirs[1][-1] == 1.9 and np.abs(theirs[2]).max() == 1.05  # both clamps bit
