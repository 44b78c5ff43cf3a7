"""The REINFORCE example learns: its episodes get much longer (the pole stays up), with actions sampled by
``kiln.compile(..., seed=)`` and updates from one compiled step."""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import reinforce_cartpole  # noqa: E402


def test_episodes_get_longer_as_the_policy_learns():
    lengths = reinforce_cartpole.train(episodes=200, verbose=False)  # 30.7 -> 100.4 steps (seed 1: 26.6 -> 110.2)
    assert np.mean(lengths[-20:]) > 2.5 * np.mean(lengths[:20])


def test_the_simulated_pole_falls_without_control_and_returns_discount():
    env = reinforce_cartpole.CartPole(np.random.default_rng(0))
    env.reset()
    steps = next(t for t in range(1, 500) if env.step(1)[1])  # always push right: over within a few dozen steps
    assert 5 < steps < 60
    np.testing.assert_allclose(reinforce_cartpole.returns_to_go(3, 0.5), [1.75, 1.5, 1.0])
