"""``kiln.compile`` of a function that draws from Python's ``random`` or NumPy's global generator (timm's ``Mixup``:
``lam = np.random.beta(alpha, alpha)``): the trace would keep its one draw as a constant of the graph, so every call
repeated the first call's numbers. The trace is refused (``frontend/host_random_draws.py``): the call runs eagerly
(warned) and draws what torch's eager run draws (``torch.compile`` breaks its graph at ``np.random``); with
``fullgraph=True`` it raises, the generators left as they were."""

from __future__ import annotations

import random

import numpy as np
import pytest

import kiln
from kiln.frontend.host_random_draws import HostRandomDrawError
from oracles import require_torch


def mixup(torch, x):
    """timm's ``Mixup._mix_batch`` (mixup mode) with its ``np.random.beta`` draw."""
    lam = float(np.random.beta(1.0, 1.0))
    x_flipped = x.flip(0).mul_(1. - lam)
    return x.mul_(lam).add_(x_flipped)


def python_random_scale(torch, x):
    return x * random.random()


def _outputs(torch, fn, compiled):
    np.random.seed(0)
    random.seed(0)
    data = np.arange(6.0).reshape(3, 2)
    run = kiln.compile(lambda x: fn(torch, x), **compiled) if compiled is not None else (lambda x: fn(torch, x))
    return [np.array(run(torch.tensor(data)).numpy()) for _ in range(3)]


@pytest.mark.parametrize("fn", [mixup, python_random_scale])
def test_a_draw_in_a_compiled_function_runs_eagerly_as_torch(fn):
    torch = require_torch()
    with pytest.warns(UserWarning, match="global generator while it was traced"):
        ours = _outputs(kiln, fn, {})
    theirs = _outputs(torch, fn, None)
    for mine, torchs in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine, torchs, rtol=1e-15)
    assert not np.allclose(theirs[0], theirs[1])  # each call draws anew


@pytest.mark.parametrize("fn, generator", [(mixup, "np.random"), (python_random_scale, "random")])
def test_fullgraph_refuses_a_draw_and_leaves_the_generators(fn, generator):
    np.random.seed(1)
    random.seed(1)
    expected = np.random.random(), random.random()
    np.random.seed(1)
    random.seed(1)
    with pytest.raises(HostRandomDrawError, match=f"drew from {generator}'s global generator"):
        kiln.compile(lambda x: fn(kiln, x), fullgraph=True)(kiln.ones(2, 2))
    assert (np.random.random(), random.random()) == expected


def test_a_function_drawing_nothing_compiles():
    compiled = kiln.compile(lambda x: x * 2 + 1, fullgraph=True)
    np.random.seed(2)
    state = np.random.get_state(legacy=False)["state"]["pos"]
    np.testing.assert_array_equal(compiled(kiln.ones(2)).numpy(), [3.0, 3.0])
    assert np.random.get_state(legacy=False)["state"]["pos"] == state
