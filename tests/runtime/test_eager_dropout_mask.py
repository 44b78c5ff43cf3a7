"""Eager dropout keeps its mask for the backward (as PyTorch saves it) instead of drawing it again from its seed: the
backward draws no random numbers, and the gradient is the forward's mask, bit for bit the numbers the seed gives."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.frontend import init


@pytest.fixture
def philox_draws(monkeypatch):
    """How many Philox generators NumPy built (one per random draw), counted while the test runs."""
    made = []
    real = np.random.Philox

    def counting(*args, **kwargs):
        made.append(kwargs.get("key"))
        return real(*args, **kwargs)

    monkeypatch.setattr(np.random, "Philox", counting)
    return made


def test_the_backward_draws_nothing_first_step_and_compiled(philox_draws):
    w = kiln.tensor(np.ones((4, 30), np.float32), requires_grad=True)
    drop = nn.Dropout(0.25)
    for step in range(3):  # the first backward replays op by op, the second compiles, the third reuses it
        out = drop(drop(w * 2.0))
        assert len(philox_draws) == 2 * (step + 1), "one draw per dropout in the forward"
        out.sum().backward()
        assert len(philox_draws) == 2 * (step + 1), f"step {step}: the backward drew a mask again"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_gradient_is_the_mask_its_seed_gives(dtype):
    p, upstream = 0.3, 0.75
    kiln.manual_seed(21)
    seed = int(init.draw_seed())  # the seed eager dropout draws first after manual_seed(21)
    kiln.manual_seed(21)
    x = np.random.default_rng(1).standard_normal((5, 17)).astype(dtype)
    w = kiln.tensor(x, requires_grad=True)
    out = nn.Dropout(p)(w)
    (out * upstream).sum().backward()
    # the NumPy kernel's numbers, drawn here independently: Philox-4x64 keyed by (seed, stream 0)
    u = np.random.Generator(np.random.Philox(key=np.array([seed, 0], np.uint64))).random(x.shape, dtype=np.dtype(dtype))
    mask = np.where(u >= np.dtype(dtype).type(p), np.dtype(dtype).type(1 / (1 - p)), np.dtype(dtype).type(0))
    assert 0 < np.count_nonzero(mask) < mask.size
    np.testing.assert_array_equal(out.numpy(), x * mask)
    np.testing.assert_array_equal(np.asarray(w.grad), np.dtype(dtype).type(upstream) * mask)

