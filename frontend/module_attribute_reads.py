"""The plain attributes of modules a trace reads (``self.temperature``, ``self.block.scale``), noted for
``kiln.compile``'s guards (``runtime/attribute_writes.py``, ``module_reads``).

``torch.compile`` guards the module attributes its code reads, not the others: a training loop that keeps a float on
the model between calls (``model.last_loss = loss.item()``), which the forward never reads, must not trace again at
every call. While a trace runs (``recording_module_reads``), ``Module.__getattribute__`` notes each public attribute
read from a module's own ``__dict__`` in every trace on the thread's stack; outside traces ``Module`` has no
``__getattribute__`` of its own, so eager attribute access costs nothing more. A subclass that defines its own
``__getattribute__`` is seen only where it calls ``super().__getattribute__``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

from kiln.frontend.trace import TraceContext

_LOCK = threading.Lock()
_DEPTH = [0]
"""Traces running now that record reads (in any thread); the hook is installed while there is one."""


@contextlib.contextmanager
def recording_module_reads() -> Iterator[None]:
    """While the block runs, module attribute reads in this thread's traces are noted in each trace's
    ``module_attribute_reads``."""
    from kiln.frontend.module import Module  # lazily: the module class builds on the trace

    with _LOCK:
        if _DEPTH[0] == 0:
            Module.__getattribute__ = _noting_getattribute  # type: ignore[method-assign]
        _DEPTH[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                del Module.__getattribute__


def _noting_getattribute(self: Any, name: str) -> Any:
    """``object.__getattribute__`` (a missing name still reaches ``Module.__getattr__``), noting a public attribute
    found in the instance's ``__dict__`` in each trace on this thread's stack."""
    value = object.__getattribute__(self, name)
    if name[0] != "_":
        stack = TraceContext._local.__dict__.get("stack")
        if stack and name in object.__getattribute__(self, "__dict__"):
            for context in stack:
                context.module_attribute_reads.setdefault((id(self), name), self)
    return value


__all__ = ["recording_module_reads"]
