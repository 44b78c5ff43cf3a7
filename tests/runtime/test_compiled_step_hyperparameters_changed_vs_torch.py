"""A ``kiln.compile``d training step whose optimizer's hyperparameters are changed between calls (a schedule written
by hand into ``param_groups``), against torch 2.13's eager loop: setting SGD's momentum to 0 after some steps made the
compiled step fail (KeyError 'momentum_buffer': the update no longer writes that state, which torch keeps as it is)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

SCHEDULES = {
    "SGD momentum off and on": ("SGD", {"lr": 0.01, "momentum": 0.9}, {2: {"momentum": 0.0}, 4: {"momentum": 0.5}}),
    "SGD nesterov and dampening": ("SGD", {"lr": 0.01, "momentum": 0.9}, {2: {"nesterov": True}, 3: {"dampening": 0.3}}),
    "Adam betas and weight decay": ("Adam", {"lr": 0.01}, {2: {"betas": (0.5, 0.9)}, 4: {"weight_decay": 0.1}}),
    "RMSprop momentum off": ("RMSprop", {"lr": 0.01, "momentum": 0.9}, {3: {"momentum": 0.0}}),
}


def _run(name, schedule):
    lib, _, _ = libraries(name)
    kind, options, changes = SCHEDULES[schedule]
    model = lib.nn.Linear(3, 2).double()
    rng = np.random.default_rng(0)
    with lib.no_grad():
        for p in model.parameters():
            p.copy_(lib.tensor(rng.standard_normal(tuple(p.shape))))
    optimizer = getattr(lib.optim, kind)(model.parameters(), **options)

    def step(x):
        optimizer.zero_grad()
        loss = (model(x) ** 2).sum()
        loss.backward()
        optimizer.step()
        return loss.detach()

    run = kiln.compile(step, fullgraph=True) if name == "kiln" else step
    losses = []
    for call in range(6):
        optimizer.param_groups[0].update(changes.get(call, {}))
        losses.append(float(run(lib.tensor(rng.standard_normal((4, 3))))))
    return losses, [p.detach().numpy() for p in model.parameters()]


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_hyperparameters_changed_between_compiled_steps_as_torch(schedule, float64_default):
    ours, theirs = _run("kiln", schedule), _run("torch", schedule)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    for mine, expected in zip(ours[1], theirs[1], strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-12)
