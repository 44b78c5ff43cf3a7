"""Porting probe, RL (REINFORCE then PPO with one Adam): a parameter an update finds without ``.grad`` is not
stepped, and its own step count (``torch.optim``'s ``state[p]["step"]``) does not advance, so a head first trained
late gets Adam's bias correction from step 1, as PyTorch's (kiln used the optimizer's global count)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

OPTIMIZERS = {
    "Adam": lambda lib, params: lib.optim.Adam(params, lr=0.1),
    "AdamW": lambda lib, params: lib.optim.AdamW(params, lr=0.1, weight_decay=0.1),
    "NAdam": lambda lib, params: lib.optim.NAdam(params, lr=0.1),
    "RAdam": lambda lib, params: lib.optim.RAdam(params, lr=0.1),
    "Adamax": lambda lib, params: lib.optim.Adamax(params, lr=0.1),
    "Adam amsgrad": lambda lib, params: lib.optim.Adam(params, lr=0.1, amsgrad=True),
}


def _heads_trained_in_turn(lib, make_optimizer, schedule):
    """Two heads on one body; ``schedule`` says which head's loss each step trains."""
    rng = np.random.default_rng(0)
    body, first, second = lib.nn.Linear(3, 4), lib.nn.Linear(4, 2), lib.nn.Linear(4, 1)
    modules = (body, first, second)
    for module in modules:
        module.double()
        for p in module.parameters():
            p.data = lib.tensor(rng.standard_normal(tuple(p.shape)))
    optimizer = make_optimizer(lib, [p for m in modules for p in m.parameters()])
    x = lib.tensor(rng.standard_normal((5, 3)))
    losses = []
    for head in schedule:
        hidden = body(x).tanh()
        loss = (first if head == 1 else second)(hidden).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, [np.array(p.detach().numpy()) for m in modules for p in m.parameters()]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("schedule", [(1, 1, 1, 2, 2, 1), (2, 1, 2, 1, 1)])
def test_a_parameter_first_updated_late_counts_its_own_steps_as_torch(name, schedule, float64_default):
    torch = require_torch()
    (our_losses, ours), (their_losses, theirs) = (_heads_trained_in_turn(lib, OPTIMIZERS[name], schedule) for lib in (kiln, torch))
    np.testing.assert_allclose(our_losses, their_losses, rtol=1e-12)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
