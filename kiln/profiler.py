"""``kiln.profiler`` as ``torch.profiler``: ``profile``, ``schedule``, ``record_function``, ``ProfilerActivity``,
``tensorboard_trace_handler`` (``runtime/profiler.py``)."""

from kiln.runtime.profiler import (  # noqa: F401
    EventList, ProfilerAction, ProfilerActivity, profile, record_function, schedule, supported_activities,
    tensorboard_trace_handler,
)

__all__ = ["EventList", "ProfilerAction", "ProfilerActivity", "profile", "record_function", "schedule",
           "supported_activities", "tensorboard_trace_handler"]
