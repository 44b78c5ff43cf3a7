"""A ``kiln.compile(fullgraph=True)`` training step that writes its own learning rate into ``param_groups`` from an
argument (NVlabs/edm's ``g['lr'] = optimizer_kwargs['lr'] * min(cur_nimg / max(lr_rampup_kimg * 1000, 1e-8), 1)``
before ``optimizer.step()``), against torch 2.13's eager loop. The Python ``cur_nimg`` is traced as a number, so the
group held the trace's tensor, which the compiled update then read as its fed lr input (a TracedArrayError). Now the
update uses the computed value and the group gets it back as a Python float after each call
(``runtime/step_graph.py`` ``computed_hyper``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries


def _run(name, kind):
    lib, _, _ = libraries(name)
    model = lib.nn.Linear(3, 2).double()
    rng = np.random.default_rng(0)
    with lib.no_grad():
        for p in model.parameters():
            p.copy_(lib.tensor(rng.standard_normal(tuple(p.shape))))
    optimizer_kwargs = dict(lr=0.1)
    optimizer = getattr(lib.optim, kind)(model.parameters(), **optimizer_kwargs)

    def step(x, cur_nimg):
        optimizer.zero_grad()
        loss = (model(x) ** 2).sum()
        loss.backward()
        for g in optimizer.param_groups:
            g['lr'] = optimizer_kwargs['lr'] * min(cur_nimg / max(0.01 * 1000, 1e-8), 1)
        optimizer.step()
        return loss.detach()

    run = kiln.compile(step, fullgraph=True) if name == "kiln" else step
    losses, lrs = [], []
    for cur_nimg in range(0, 16, 4):
        losses.append(float(run(lib.tensor(rng.standard_normal((4, 3))), cur_nimg)))
        lrs.append(optimizer.param_groups[0]["lr"])
    return losses, lrs, [p.detach().numpy() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["Adam", "SGD"])
def test_lr_written_in_the_compiled_step_as_torch(kind, float64_default):
    ours, theirs = _run("kiln", kind), _run("torch", kind)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    assert all(type(lr) is float for lr in ours[1])
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-15)
    for mine, expected in zip(ours[2], theirs[2], strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-12)
