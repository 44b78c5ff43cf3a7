"""``torch.autograd.detect_anomaly``: an eager backward that stops at the first op whose gradient holds NaN.

```python
with kiln.autograd.detect_anomaly():
    loss = model(x).log().sum()
    loss.backward()          # RuntimeError: Function 'vjp of tensor.log from model.py:12 in forward: ...'
                             # returned nan values in its 0th output.
```

kiln already records every eager op's user line, so the error names the
forward op whose backward made the NaN and where it was called (PyTorch
records a traceback per op in this mode and prints it as a warning). In this
mode a backward runs its ops one by one (``eager_grad.replayed``), never the
compiled function, and each result is checked. ``set_detect_anomaly(mode)``
switches it for a block or for good; ``check_nan=False`` keeps the mode on
without the checks.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

_STATE = {"enabled": False, "check_nan": True}


def is_anomaly_enabled() -> bool:
    return _STATE["enabled"]


def is_anomaly_check_nan_enabled() -> bool:
    return _STATE["check_nan"]


class set_detect_anomaly:  # noqa: N801  (PyTorch's name)
    """Turn anomaly detection on or off: at once (as a call), restored on exit when used as a context manager."""

    def __init__(self, mode: bool, check_nan: bool = True) -> None:
        self._previous = dict(_STATE)
        _STATE.update(enabled=bool(mode), check_nan=bool(check_nan))

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        _STATE.update(self._previous)


class detect_anomaly:  # noqa: N801  (PyTorch's name)
    """Anomaly detection for a block (``with``) or a function (decorator), as ``torch.autograd.detect_anomaly``."""

    def __init__(self, check_nan: bool = True) -> None:
        self.check_nan = check_nan
        self._previous: dict[str, bool] = {}

    def __enter__(self) -> None:
        warnings.warn("Anomaly Detection has been enabled. This mode will increase the runtime and should only be "
                      "enabled for debugging.", stacklevel=2)
        self._previous = dict(_STATE)
        _STATE.update(enabled=True, check_nan=self.check_nan)

    def __exit__(self, *exc: Any) -> None:
        _STATE.update(self._previous)

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self:
                return function(*args, **kwargs)

        return wrapped


def check_gradient(location: str | None, name: str, results: Any) -> None:
    """Raise PyTorch's error if an eager backward op's result holds NaN (in anomaly mode with ``check_nan``)."""
    import numpy as np

    from kiln.frontend.eager_values import ARRAYS

    for index, value in enumerate(results):
        array = ARRAYS.get(value)
        if array is not None and array.dtype.kind in "fcV" and np.isnan(np.asarray(array, dtype=np.float64)).any():
            raise RuntimeError(f"Function '{location or name}' returned nan values in its {index}th output.")


__all__ = ["detect_anomaly", "is_anomaly_check_nan_enabled", "is_anomaly_enabled", "set_detect_anomaly"]
