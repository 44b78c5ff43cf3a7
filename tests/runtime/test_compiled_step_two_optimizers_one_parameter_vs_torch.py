"""Two optimizers stepping the same parameters in one ``kiln.compile(fullgraph=True)`` step (``optimizer.step()`` then
``head_optimizer.step()`` over a subset): the second update reads the first one's result. ``schedule-updates`` moved
the first update up to its gradient and dropped the second, anchored on it (the NumPy backend then failed with a bare
``KeyError`` on the missing value, a bias's update); each update now moves with the ones anchored on it
(``compiler/passes/schedule_updates.py``). Against torch 2.13's eager loop, in float64."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

OPTIMIZERS = {
    "SGD": lambda torch, params: torch.optim.SGD(params, lr=0.1),
    "Adam": lambda torch, params: torch.optim.Adam(params, lr=0.01, betas=(0.5, 0.9)),
}


@pytest.mark.parametrize("second", list(OPTIMIZERS))
@pytest.mark.parametrize("first", list(OPTIMIZERS))
def test_two_optimizers_stepping_one_parameter_as_torch(first, second):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((4, 3)), rng.standard_normal(4), rng.standard_normal((2, 4)), rng.standard_normal(2)]
    batch = rng.standard_normal((5, 3))
    results = []
    for library in ("kiln", "torch"):
        torch, nn, F = libraries(library)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        with torch.no_grad():
            for parameter, value in zip(model.parameters(), weights):
                parameter.copy_(torch.tensor(value))
        optimizer = OPTIMIZERS[first](torch, model.parameters())
        head_optimizer = OPTIMIZERS[second](torch, model[2].parameters())

        def step(x):
            optimizer.zero_grad()
            head_optimizer.zero_grad()
            loss = model(x).pow(2).sum()
            loss.backward()
            optimizer.step()
            head_optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if library == "kiln" else step
        losses = [run(torch.tensor(batch)).item() for _ in range(3)]
        results.append((losses, [np.array(p.detach().numpy()) for p in model.parameters()]))
    (our_losses, ours), (their_losses, theirs) = results
    np.testing.assert_allclose(our_losses, their_losses, rtol=1e-12)
    for our, their in zip(ours, theirs):
        np.testing.assert_allclose(our, their, rtol=1e-12, atol=1e-14)
