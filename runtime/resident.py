"""Training state that stays on a device between steps (onnxruntime's OrtValues, CuPy arrays).

A backend whose executable ``keeps_state`` returns its donated results (new
parameters and optimizer state) as device handles and accepts ``RESIDENT`` for
a donated input, meaning "last call's result". ``ResidentState`` decides, per
call, which inputs can stay resident, and copies results back to the NumPy
arrays only when someone reads them: a parameter's ``.data``, ``sync()``,
``state_dict()``. Reading or writing a parameter's ``.data`` marks it touched,
so the next call uploads the host value and no write is ever lost.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import numpy as np

from kiln.runtime.executable import RESIDENT


def _copy_back(target: np.ndarray, handle: Any) -> None:
    if hasattr(handle, "numpy"):  # an OrtValue
        handle = handle.numpy()
    elif hasattr(handle, "get") and not isinstance(handle, np.ndarray):  # a CuPy array: device -> host
        handle = handle.get()
    np.copyto(target, np.asarray(handle))


class ResidentState:
    """Which donated inputs of the last executable hold the newest values, and the copies owed to the host."""

    def __init__(self) -> None:
        self.executable: Any = None
        self.versions: dict[int, int] = {}
        """Donated parameter input -> the parameter's version right after the last call."""
        self.pending: dict[int, tuple[np.ndarray, Any, Any]] = {}
        """Donated input -> (its host array, the device result owed to it, its Parameter or None)."""

    def substitute(self, executable: Any, parameters_at: dict[int, Any], feeds: list[Any]) -> list[Any]:
        """Feeds with ``RESIDENT`` wherever the device already holds the newest value."""
        if executable is not self.executable:
            self.sync()
            self.executable, self.versions = executable, {}
            return feeds
        fed = list(feeds)
        for index in executable.donations:
            param = parameters_at.get(index)
            if index in self.pending and (param is None or param.version == self.versions.get(index)):
                fed[index] = RESIDENT
            elif index in self.pending:
                del self.pending[index]  # the host copy was touched: upload it instead
        return fed

    def hold(self, executable: Any, parameters_at: dict[int, Any], feeds: Sequence[Any], outputs: Sequence[Any]) -> list[Any]:
        """Record the device results as owed to the host arrays; returns the outputs with those entries as ``None``."""
        kept = list(outputs)
        for source, target in executable.donations.items():
            host = feeds[source] if feeds[source] is not RESIDENT else self.pending[source][0]
            param = parameters_at.get(source)
            self.pending[source] = (host, outputs[target], param)
            kept[target] = None
            if param is not None:
                param._pending_sync = partial(self.sync_one, source)
                self.versions[source] = param.version
        return kept

    def sync_one(self, index: int) -> None:
        if index not in self.pending:
            return
        host, handle, param = self.pending.pop(index)
        _copy_back(host, handle)
        if param is not None:
            param._pending_sync = None

    def sync(self) -> None:
        """Copy every result still on the device back into its NumPy array."""
        for index in list(self.pending):
            self.sync_one(index)

    def invalidate(self) -> None:
        """Forget the device copies (after the host state was replaced, e.g. by ``load_state_dict``)."""
        self.sync()
        self.executable, self.versions = None, {}
