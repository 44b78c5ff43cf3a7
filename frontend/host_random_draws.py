"""Python's and NumPy's global random draws inside a ``kiln.compile`` trace: refused, as the graph would repeat them.

A trace runs the Python once; a number drawn there (timm's ``Mixup``: ``lam = np.random.beta(alpha, alpha)``,
``np.random.randint`` for the CutMix box; ``random.random() < p``) becomes a constant of the graph, so every later call
reused the first call's draw and the global generator stopped advancing: silently not what the eager code computes.
``torch.compile`` breaks the graph at ``np.random`` (``fullgraph=True`` raises) and replays ``random``'s draws. Here a
trace that moved either global generator is refused (``HostRandomDrawError``): ``fullgraph=True`` raises, otherwise the
call runs eagerly (warned), with the generators put back first so the eager call draws what an uncompiled call would.

```python
def step(x, y):
    lam = np.random.beta(1.0, 1.0)          # the trace would keep this one value for every call
    return model(lam * x + (1 - lam) * x.flip(0))
```
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np

from kiln.compiler.errors import KilnError


class HostRandomDrawError(KilnError):
    """A compiled function drew from ``random`` or ``np.random``'s global generator while it was traced."""


def _states() -> tuple[Any, Any]:
    return random.getstate(), np.random.get_state(legacy=False)


def _moved(before: tuple[Any, Any], after: tuple[Any, Any]) -> list[str]:
    """The names of the global generators whose state differs between ``before`` and ``after``."""
    moved = ["random"] if before[0] != after[0] else []
    if not _same_numpy_state(before[1], after[1]):
        moved.append("np.random")
    return moved


def _same_numpy_state(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two ``np.random.get_state(legacy=False)`` states are one (the Mersenne Twister's key and position, the
    cached Gaussian)."""
    same_position = first["state"]["pos"] == second["state"]["pos"] and first["has_gauss"] == second["has_gauss"]
    return same_position and first["gauss"] == second["gauss"] and np.array_equal(first["state"]["key"],
                                                                                  second["state"]["key"])


def _put_back(before: tuple[Any, Any]) -> list[str]:
    """The generators moved since ``before``, put back to it."""
    moved = _moved(before, _states())
    if moved:
        random.setstate(before[0])
        np.random.set_state(before[1])
    return moved


@contextlib.contextmanager
def refusing_host_random_draws() -> Iterator[None]:
    """Around a trace: raises ``HostRandomDrawError`` (the generators put back) where the traced Python drew from
    ``random`` or ``np.random``'s global generator."""
    before = _states()
    try:
        yield
    except BaseException:
        _put_back(before)  # a trace that fails is tried again (static shapes) or run eagerly: the same draws
        raise
    moved = _put_back(before)
    if moved:
        raise HostRandomDrawError(
            f"the function drew from {' and '.join(moved)}'s global generator while it was traced: the compiled "
            "graph would keep the numbers of this one draw for every call. Draw them outside the compiled "
            "function and pass them in as arguments, or draw with kiln's random functions (kiln.rand, "
            "kiln.randint, torch.distributions), which a compiled graph draws anew at each call")
