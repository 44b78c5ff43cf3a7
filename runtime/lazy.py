"""A scalar still on a device: the step returns it at once, and the host waits only when the value is read.

```python
loss = step(x, y)          # the step's kernels are queued; nothing waited for
losses.append(loss)        # still nothing
print(f"{loss:.4f}")       # now the host synchronises and copies one number
```

``float()``, ``format``, comparisons, arithmetic with numbers and
``np.asarray`` all read the value (once; it is cached).

Checks of the inputs that would make the host wait (a label outside the
classes) are deferred the same way: a kernel computes the verdict on the
device and registers it (``defer_check``); the step hands its checks to the
scalars it returns, and reading one raises the input error, as PyTorch's
device-side asserts surface at the next synchronisation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class DeferredCheck:
    """``failed``: a 0-d device boolean; ``explain()`` raises the error that says what and where (host copies)."""

    failed: Any
    explain: Callable[[], None]

    def run(self) -> None:
        if bool(self.failed.get() if hasattr(self.failed, "get") else self.failed):
            self.explain()


_PENDING = threading.local()


def defer_check(failed: Any, explain: Callable[[], None]) -> None:
    """Register a check for the step running on this thread (see ``take_checks``)."""
    if not hasattr(_PENDING, "checks"):
        _PENDING.checks = []
    _PENDING.checks.append(DeferredCheck(failed, explain))


def take_checks() -> tuple[DeferredCheck, ...]:
    """The checks registered on this thread since the last call, which it forgets."""
    checks = tuple(getattr(_PENDING, "checks", ()))
    _PENDING.checks = []
    return checks


class LazyScalar:
    """A 0-d device array (CuPy) read on demand; behaves as a Python float wherever one is read."""

    __slots__ = ("_handle", "_value", "_checks")

    def __init__(self, handle: Any, checks: tuple[DeferredCheck, ...] = ()):
        self._handle = handle
        self._value: float | None = None
        self._checks = checks

    @property
    def ready(self) -> bool:
        """Whether the value was already read (no synchronisation left to do)."""
        return self._value is not None

    def item(self) -> float:
        """The value; raises the first failed deferred check of the step that made it (on every read)."""
        if self._value is None:
            handle = self._handle
            self._value = float(handle.get() if hasattr(handle, "get") else np.asarray(handle))
            self._handle = None
        for check in self._checks:
            check.run()
        return self._value

    def __float__(self) -> float:
        return self.item()

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    def __format__(self, spec: str) -> str:
        return format(self.item(), spec)

    def __repr__(self) -> str:
        return repr(self.item())

    def __str__(self) -> str:
        return str(self.item())

    def __hash__(self) -> int:
        return hash(self.item())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.item(), dtype=dtype)

    def __round__(self, digits: int | None = None) -> float:
        return round(self.item(), digits)

    def __eq__(self, other: Any) -> bool:
        return self.item() == float(other)

    def __lt__(self, other: Any) -> bool:
        return self.item() < float(other)

    def __le__(self, other: Any) -> bool:
        return self.item() <= float(other)

    def __gt__(self, other: Any) -> bool:
        return self.item() > float(other)

    def __ge__(self, other: Any) -> bool:
        return self.item() >= float(other)

    def __neg__(self) -> float:
        return -self.item()

    def __abs__(self) -> float:
        return abs(self.item())

    def __add__(self, other: Any) -> float:
        return self.item() + float(other)

    def __radd__(self, other: Any) -> float:
        return float(other) + self.item()

    def __sub__(self, other: Any) -> float:
        return self.item() - float(other)

    def __rsub__(self, other: Any) -> float:
        return float(other) - self.item()

    def __mul__(self, other: Any) -> float:
        return self.item() * float(other)

    def __rmul__(self, other: Any) -> float:
        return float(other) * self.item()

    def __truediv__(self, other: Any) -> float:
        return self.item() / float(other)

    def __rtruediv__(self, other: Any) -> float:
        return float(other) / self.item()


def read(value: Any) -> Any:
    """``value`` with any ``LazyScalar`` read (other values unchanged)."""
    return value.item() if isinstance(value, LazyScalar) else value
