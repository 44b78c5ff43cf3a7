"""``kiln.random``: ``torch.random``'s names for the global stream (``frontend/torch_rng_state.py``)."""

from kiln.frontend.init import manual_seed
from kiln.frontend.torch_rng_state import fork_rng, get_rng_state, initial_seed, seed, set_rng_state

__all__ = ["fork_rng", "get_rng_state", "initial_seed", "manual_seed", "seed", "set_rng_state"]
