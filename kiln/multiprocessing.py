"""``kiln.multiprocessing``: what ported code imports ``torch.multiprocessing`` for, here Python's own
``multiprocessing`` (``get_context``, ``set_start_method``, ``Process``, ``Queue``, ...). kiln tensors pickle as their
arrays, so they travel through these queues as they are; there is no shared-memory tensor sharing."""

from multiprocessing import (  # noqa: F401  (re-exported)
    Event, Lock, Pool, Process, Queue, SimpleQueue, cpu_count, current_process, get_all_start_methods, get_context,
    get_start_method, set_start_method,
)

__all__ = [
    "Event", "Lock", "Pool", "Process", "Queue", "SimpleQueue", "cpu_count", "current_process", "get_all_start_methods",
    "get_context", "get_start_method", "set_start_method",
]
