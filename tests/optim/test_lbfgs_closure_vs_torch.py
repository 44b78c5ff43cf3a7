"""``torch.optim.LBFGS.step(closure)`` with PyTorch's closure (``zero_grad``, loss, ``backward()``, ``return loss``),
against torch 2.13: ``step`` returns the first evaluation's loss as the closure returned it (torch's ``orig_loss``, a
tensor: ``loss = optimizer.step(closure); loss.item()``); kiln returned a Python float. Inside ``kiln.compile`` the
step cannot be one graph (a data-dependent number of closure calls): it raises a ``TraceError`` at the user's line,
which ``kiln.compile`` turns into its eager fallback (warned) and ``fullgraph=True`` raises; it was a ``TypeError`` from
``np.asarray`` of a traced gradient, raised even without ``fullgraph``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

OPTIONS = dict(lr=1.0, max_iter=6, history_size=5, line_search_fn="strong_wolfe")


def _fit(name, compiled=None):
    """An L-BFGS step on a small regression; ``compiled``: the step called through ``kiln.compile`` (with that
    ``fullgraph``). Returns the step's loss, the closure's first loss and the weights after."""
    torch, nn, F = libraries(name)
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    for p in model.parameters():
        p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))
    x, y = torch.tensor(rng.standard_normal((8, 3))), torch.tensor(rng.standard_normal((8, 1)))
    optimizer = torch.optim.LBFGS(model.parameters(), **OPTIONS)
    first = []

    def closure():
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        first.append(loss)
        return loss

    def step(x):
        return optimizer.step(closure)

    run = step if compiled is None else kiln.compile(step, fullgraph=compiled)
    returned = run(x)
    return returned, first[0], [p.detach().numpy().copy() for p in model.parameters()]


def test_step_returns_the_closures_loss_tensor(float64_default):
    returned, first, weights = _fit("kiln")
    theirs, their_first, their_weights = _fit("torch")
    assert returned is first and theirs is their_first
    assert isinstance(returned, kiln.Tensor) and returned.requires_grad == theirs.requires_grad
    assert returned.item() == pytest.approx(theirs.item(), rel=1e-12)
    for mine, expected in zip(weights, their_weights, strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-9, atol=1e-12)


def test_step_under_kiln_compile_runs_eagerly_warned(float64_default):
    with pytest.warns(UserWarning, match=r"runs eagerly.*LBFGS\.step\(closure\) cannot be captured"):
        returned, _, weights = _fit("kiln", compiled=False)
    theirs, _, their_weights = _fit("torch")
    assert returned.item() == pytest.approx(theirs.item(), rel=1e-12)
    for mine, expected in zip(weights, their_weights, strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-9, atol=1e-12)


def test_step_under_fullgraph_compile_names_the_users_line(float64_default):
    with pytest.raises(kiln.TraceError, match=r"(?s)test_lbfgs_closure_vs_torch.py:\d+ in step.*LBFGS\.step\(closure\) "
                                              r"cannot be captured in a compiled graph.*outside kiln.compile"):
        _fit("kiln", compiled=True)
