"""The global random stream's state, as ``torch.get_rng_state``/``set_rng_state``/``seed``/``initial_seed``/
``random.fork_rng``: a checkpoint saves it and a resumed run draws what the straight run drew.

```python
checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": kiln.get_rng_state()}
kiln.save(checkpoint, "ckpt.pt")
...
kiln.set_rng_state(kiln.load("ckpt.pt")["rng"])   # later randn_like, dropout masks, randperm: as if never stopped
```

The state is kiln's generator's (a NumPy bit-generator state, a dict of ints and strings that ``kiln.save`` and
``kiln.load`` keep), not PyTorch's byte tensor: kiln's numbers are not PyTorch's, so a PyTorch state cannot seed them.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
from typing import Any, Iterator

from kiln.frontend import init


def get_rng_state() -> dict:
    """A copy of the global stream's state (every eager draw and initialisation takes its numbers from it)."""
    return copy.deepcopy(init.rng_state())


def set_rng_state(new_state: Any) -> None:
    """Restore a state from ``get_rng_state()``: the draws that follow are those that followed it."""
    if not isinstance(new_state, dict) or "bit_generator" not in new_state:
        raise TypeError(f"set_rng_state takes the dict kiln.get_rng_state() returns, got {type(new_state).__name__}; "
                        "a PyTorch ByteTensor state cannot seed kiln's generator (kiln's numbers are its own)")
    init.set_rng_state(copy.deepcopy(new_state))


def initial_seed() -> int:
    """The seed of the last ``kiln.manual_seed`` (or ``kiln.seed()``); 0 before any."""
    return init.current_seed()


def seed() -> int:
    """Seed the global stream from the operating system's entropy; returns the seed, as ``torch.seed``."""
    new_seed = secrets.randbits(63)
    init.manual_seed(new_seed)
    return new_seed


@contextlib.contextmanager
def fork_rng(devices: Any = None, enabled: bool = True, **_device_options: Any) -> Iterator[None]:
    """Draws inside leave the global stream as it was before, as ``torch.random.fork_rng`` (devices change nothing)."""
    if not enabled:
        yield
        return
    saved = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


__all__ = ["fork_rng", "get_rng_state", "initial_seed", "seed", "set_rng_state"]
