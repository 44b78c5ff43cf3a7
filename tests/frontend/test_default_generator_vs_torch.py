"""``kiln.default_generator`` and ``kiln.manual_seed``'s result, as torch's: ``manual_seed`` returns the default
generator (diffusers' ``generator = torch.manual_seed(0)`` then ``pipe(..., generator=generator)``), which is the
global stream: seeding it seeds ``kiln.manual_seed``'s, draws given it are the global draws, its state round-trips.
Before, ``manual_seed`` returned None (``generator.initial_seed()`` failed) and there was no default generator."""

from __future__ import annotations

import numpy as np

from oracles import libraries


def test_manual_seed_returns_the_default_generator_whose_draws_are_the_global_ones():
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        generator = torch.manual_seed(5)
        assert generator is torch.default_generator and generator.initial_seed() == 5 == torch.initial_seed()
        given = torch.randn(4, generator=generator)
        torch.manual_seed(5)
        np.testing.assert_array_equal(given.numpy(), torch.randn(4).numpy())


def test_seeding_the_default_generator_seeds_the_global_stream():
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        torch.default_generator.manual_seed(7)
        first = torch.rand(3)
        torch.manual_seed(7)
        np.testing.assert_array_equal(first.numpy(), torch.rand(3).numpy())
        assert torch.initial_seed() == 7


def test_its_state_round_trips():
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        state = torch.default_generator.get_state()
        first = torch.randn(3)
        torch.default_generator.set_state(state)
        np.testing.assert_array_equal(first.numpy(), torch.randn(3).numpy())
