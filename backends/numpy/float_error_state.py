"""``np.errstate(all=mode)`` around a generated function, at a quarter of its cost.

Eager mode runs one generated function per op, so entering ``np.errstate`` (a new object, a new error state built
from the keywords, a context-variable set and reset: about 0.9 µs) was an eighth of a small op's time.
NumPy 2 keeps its error state in one context variable; the state ``errstate(all=mode)`` would build from a given
state is always the same, so it is built once per state met and set directly:

```python
run = FloatErrorState("ignore").around(function)
run(*arrays)                 # function(*arrays) inside errstate(all="ignore"), derived from the state now in force
```

A state derived from the current one keeps its buffer size and error callback (``np.seterrcall``), as
``errstate`` does. Where the current state is already the derived one (nested calls), nothing is set. NumPy 1
(no context variable) uses ``np.errstate`` itself.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

try:  # NumPy 2: the error state is this context variable (np.errstate sets and resets it)
    from numpy._core.umath import _extobj_contextvar, _make_extobj  # type: ignore[attr-defined]
except ImportError:  # NumPy 1
    _extobj_contextvar = _make_extobj = None

_STATES_KEPT = 64
"""Derived states remembered per mode; past that the table starts over (each ``np.errstate`` block a user enters
around kiln's calls is a new current state)."""


class FloatErrorState:
    """Functions run inside ``np.errstate(all=mode)`` (``mode``: ``"ignore"``, ``"warn"`` or ``"raise"``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._derived: dict[Any, Any] = {}
        """Per error state met (NumPy's capsule, keyed by identity), the state ``errstate(all=mode)`` makes of it;
        each derived state maps to itself."""

    def around(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` run in this state; the state before is back after each run, whatever it raised."""
        if _extobj_contextvar is None:
            return _around_errstate(function, self.mode)
        current_state, set_state, reset_state, derived_states = (_extobj_contextvar.get, _extobj_contextvar.set,
                                                                 _extobj_contextvar.reset, self._derived)

        def run(*arrays: Any) -> Any:
            current = current_state()
            derived = derived_states.get(current)
            if derived is current:  # already in this state (a nested call)
                return function(*arrays)
            token = set_state(derived if derived is not None else self._derive(current))
            try:
                return function(*arrays)
            finally:
                reset_state(token)

        run.__wrapped__ = function  # type: ignore[attr-defined]  (what profilers and benchmarks unwrap to)
        return run

    def _derive(self, current: Any) -> Any:
        """``errstate(all=mode)``'s state made from ``current`` (which is the state in force now)."""
        derived = _make_extobj(all=self.mode)
        if len(self._derived) >= _STATES_KEPT:
            self._derived.clear()
        self._derived[current] = derived
        self._derived[derived] = derived
        return derived


def _around_errstate(function: Callable[..., Any], mode: str) -> Callable[..., Any]:
    """NumPy 1's form: ``np.errstate`` itself."""

    def run(*arrays: Any) -> Any:
        with np.errstate(all=mode):
            return function(*arrays)

    run.__wrapped__ = function  # type: ignore[attr-defined]
    return run


__all__ = ["FloatErrorState"]
