"""NumPy arrays and random generators a ``kiln.compile``'d function changes while traced: refused, so the call runs
eagerly.

```python
stats = np.zeros(3)
rng = np.random.default_rng(0)

@kiln.compile
def step(x):
    stats[0] += 1                          # a host-side count in a NumPy array
    return x * float(rng.normal())         # a draw from the user's own generator
```

A trace runs the Python once: the array was written once and the draw became a constant of the graph, so later calls
neither counted nor drew anew, silently (``torch.compile`` replays the array's write and breaks the graph at the draw).
The NumPy arrays, ``np.random.Generator``/``RandomState`` objects and ``random.Random`` instances the function reaches
(its closure's, the globals it names, a plain object's or a module's attributes) are compared with their state before
the trace; a change is undone and refused with a ``KilnError`` naming it, so the call runs eagerly, warned, drawing
what an uncompiled call would (``fullgraph=True`` raises it). The global generators are
``frontend/host_random_draws.py``'s.
"""

from __future__ import annotations

import functools
import random
from typing import Any, Callable

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.runtime.reachable_objects import Reached


def refusing_host_state_changes(traced: Callable[..., Any], reached: list[Reached]) -> Callable[..., Any]:
    """``traced`` refusing a change to a NumPy array or random generator among what its function ``reached``
    (``reachable_with_module_attributes``)."""
    watched = [(name, what, item) for name, what, item in reached if _kind(item)]
    if not watched:
        return traced

    @functools.wraps(traced)
    def refusing(*inputs: Any) -> Any:
        before = [(name, what, item, _state(item)) for name, what, item in watched]
        try:
            result = traced(*inputs)
        finally:
            changed = [(name, what, item) for name, what, item, state in before if not _same(item, state)]
            for _, _, item, state in before:
                _put_back(item, state)
        if changed:
            name, what, item = changed[0]
            raise KilnError(f"kiln.compile: the function changes {what} {name!r} ({_kind(item)}) while traced: the graph "
                            "would do it once and keep what it read (a draw, a count) at every call; the call runs "
                            "eagerly. Draw with kiln's random ops (kiln.randn, kiln.rand) or keep the host state outside "
                            "the compiled function")
        return result

    return refusing


WATCHED_BYTES = 1 << 24
"""The largest NumPy array watched (16 MiB: a copy is kept per trace; a dataset array is left alone)."""


def _kind(item: Any) -> str | None:
    if isinstance(item, np.ndarray) and item.flags.writeable and item.nbytes <= WATCHED_BYTES:
        return "a NumPy array"
    if isinstance(item, (np.random.Generator, np.random.RandomState)):
        return "a NumPy random generator"
    if isinstance(item, random.Random):
        return "a random.Random generator"
    return None


def _state(item: Any) -> Any:
    if isinstance(item, np.ndarray):
        return item.copy()
    if isinstance(item, np.random.Generator):
        return item.bit_generator.state
    return item.get_state() if isinstance(item, np.random.RandomState) else item.getstate()


def _same(item: Any, state: Any) -> bool:
    if isinstance(item, np.ndarray):
        return item.shape == state.shape and np.array_equal(item, state, equal_nan=item.dtype.kind in "fc")
    return _equal(_state(item), state)


def _equal(first: Any, second: Any) -> bool:
    """Equal generator states: dicts, tuples and arrays compared item by item (an MT19937 key is an array)."""
    if isinstance(first, dict):
        return isinstance(second, dict) and first.keys() == second.keys() and all(_equal(first[k], second[k]) for k in first)
    if isinstance(first, (tuple, list)):
        return isinstance(second, (tuple, list)) and len(first) == len(second) and all(map(_equal, first, second))
    if isinstance(first, np.ndarray) or isinstance(second, np.ndarray):
        return np.array_equal(first, second)
    return bool(first == second)


def _put_back(item: Any, state: Any) -> None:
    if _same(item, state):
        return
    if isinstance(item, np.ndarray):
        item[...] = state
    elif isinstance(item, np.random.Generator):
        item.bit_generator.state = state
    elif isinstance(item, np.random.RandomState):
        item.set_state(state)
    else:
        item.setstate(state)


__all__ = ["refusing_host_state_changes"]
