"""``kiln.profiler``: torch.profiler's API over kiln's CPU execution.

```python
with kiln.profiler.profile(record_shapes=True) as prof:
    with kiln.profiler.record_function("forward"):
        loss = F.cross_entropy(model(x), y)
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=10))
```

What is recorded, while a trace is active (between ``start_trace`` and ``stop_trace`` of the schedule):
each eager op (named as torch names it where one maps: ``aten::matmul``; else kiln's op name), each call of a
compiled executable (``kiln::compiled @<graph>``: ``kiln.compile``, ``compile_train_step``, an eager backward)
and, inside a NumPy-backend executable, each op of its lowered graph (``tensor.transpose``, a fused group as
``fused.matmul(matmul+add+relu)``), and each ``record_function`` block. ``runtime/profiler_recorder.py`` says how.
``profile_memory=True`` counts the bytes of the result arrays each op or call creates (arrays owning their memory;
a view counts nothing; buffers a compiled executable reuses from call to call are not counted, and nothing freed is
subtracted). Without a GPU timeline kiln records CPU time only: ``ProfilerActivity.CUDA`` is accepted, with a
warning that no device activity is recorded.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from contextlib import ContextDecorator
from enum import Enum
from typing import Any, Callable, Iterable

from kiln.runtime.profiler_events import EventList, write_chrome_trace
from kiln.runtime.profiler_recorder import RECORDING, Event, Recorder


class ProfilerActivity(Enum):
    CPU = "CPU"
    CUDA = "CUDA"


class ProfilerAction(Enum):
    NONE = 0
    WARMUP = 1
    RECORD = 2
    RECORD_AND_SAVE = 3


def supported_activities() -> set[ProfilerActivity]:
    """What kiln records: host (CPU) time only, on every backend."""
    return {ProfilerActivity.CPU}


def schedule(*, wait: int, warmup: int, active: int, repeat: int = 0, skip_first: int = 0,
             skip_first_wait: int = 0) -> Callable[[int], ProfilerAction]:
    """torch.profiler.schedule: skip ``skip_first`` steps, then cycles of ``wait`` idle, ``warmup`` and ``active``
    recorded steps (the last one saves: ``on_trace_ready``), ``repeat`` times (0: until the profiler stops)."""
    if wait < 0 or warmup < 0 or active <= 0 or repeat < 0 or skip_first < 0:
        raise ValueError(f"kiln.profiler.schedule: need wait >= 0, warmup >= 0, active > 0, repeat >= 0, skip_first >= 0; "
                         f"got wait={wait}, warmup={warmup}, active={active}, repeat={repeat}, skip_first={skip_first}")
    if warmup == 0:
        warnings.warn("Profiler won't be using warmup, this can skew profiler results", stacklevel=2)
    cycle = wait + warmup + active

    def action(step: int) -> ProfilerAction:
        if step < 0:
            raise ValueError(f"kiln.profiler.schedule: steps count from 0, got {step}")
        if step < skip_first:
            return ProfilerAction.NONE
        step = step - skip_first + (wait if skip_first_wait else 0)
        if repeat > 0 and step / cycle >= repeat:
            return ProfilerAction.NONE
        position = step % cycle
        if position < wait:
            return ProfilerAction.NONE
        if position < wait + warmup:
            return ProfilerAction.WARMUP
        return ProfilerAction.RECORD if position < cycle - 1 else ProfilerAction.RECORD_AND_SAVE

    return action


def _always_record(_: int) -> ProfilerAction:
    return ProfilerAction.RECORD


class record_function(ContextDecorator):
    """A named region (``with record_function("forward"):`` or ``@record_function("forward")``): one event holding
    the ops run inside it; nothing while no profiler records."""

    def __init__(self, name: str, args: str | None = None):
        self.name, self.args = name, args
        self._open: list[tuple[Recorder, Event]] = []

    def __enter__(self) -> "record_function":
        recorder = RECORDING.recorder
        if recorder is not None:
            self._open.append((recorder, recorder.open(self.name, "user_annotation")))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._open:
            recorder, event = self._open.pop()
            if event.end_ns == 0:  # not already ended by the trace stopping
                recorder.close(event)


class profile:
    """torch.profiler.profile for kiln: a context manager (or ``start()``/``stop()``) that records what kiln runs."""

    def __init__(self, *, activities: Iterable[ProfilerActivity] | None = None,
                 schedule: Callable[[int], ProfilerAction] | None = None,
                 on_trace_ready: Callable[["profile"], Any] | None = None, record_shapes: bool = False,
                 profile_memory: bool = False, with_stack: bool = False, with_flops: bool = False,
                 with_modules: bool = False, **unsupported: Any):
        self.activities = _checked_activities(activities)
        if with_flops or with_modules or unsupported:
            asked = ["with_flops"] * with_flops + ["with_modules"] * with_modules + sorted(unsupported)
            raise NotImplementedError(f"kiln.profiler.profile: {', '.join(asked)} not supported; kiln records times, "
                                      "shapes (record_shapes), result bytes (profile_memory) and source lines (with_stack)")
        self.schedule = schedule or _always_record
        self.record_steps = schedule is not None
        self.on_trace_ready = on_trace_ready
        self.record_shapes, self.profile_memory, self.with_stack = record_shapes, profile_memory, with_stack
        self.step_num = 0
        self.current_action = _action(self.schedule(0))
        self._recorder: Recorder | None = None
        self._events: list[Event] = []
        self._step_region: record_function | None = None

    def __enter__(self) -> "profile":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self._transit(ProfilerAction.NONE, self.current_action)
        self._open_step_region()

    def stop(self) -> None:
        self._close_step_region()
        self._transit(self.current_action, None)

    def step(self) -> None:
        """The next training step begins: the schedule may start, save or stop a trace."""
        self._close_step_region()
        previous = self.current_action
        self.step_num += 1
        self.current_action = _action(self.schedule(self.step_num))
        self._transit(previous, self.current_action)
        self._open_step_region()

    def _open_step_region(self) -> None:
        if self.record_steps:
            self._step_region = record_function(f"ProfilerStep#{self.step_num}")
            self._step_region.__enter__()

    def _close_step_region(self) -> None:
        if self._step_region is not None:
            self._step_region.__exit__(None, None, None)
            self._step_region = None

    def _transit(self, previous: ProfilerAction, current: ProfilerAction | None) -> None:
        """torch's action map: what each change of the schedule's action does."""
        if (previous == current and previous != ProfilerAction.RECORD_AND_SAVE) or (previous, current) == (ProfilerAction.NONE, None):
            return  # torch: (RECORD_AND_SAVE, RECORD_AND_SAVE) saves one trace and starts the next
        recording = (ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE)
        if previous == ProfilerAction.NONE:
            self._prepare_trace()
            if current in recording:
                self._start_trace()
        elif previous == ProfilerAction.WARMUP:
            if current == ProfilerAction.NONE:
                warnings.warn("Incorrect schedule: WARMUP followed by NONE", stacklevel=3)
            self._start_trace()
            if current not in recording:
                self._stop_trace()
        elif previous == ProfilerAction.RECORD:
            if current is None or current in (ProfilerAction.NONE, ProfilerAction.WARMUP):
                if current is not None:
                    warnings.warn(f"Incorrect schedule: RECORD followed by {current.name}", stacklevel=3)
                self._stop_trace()
                if current is None:
                    self._trace_ready()
        else:
            self._save_and_continue(current)

    def _save_and_continue(self, current: ProfilerAction | None) -> None:
        """After a RECORD_AND_SAVE step: the trace is ready; a new one begins unless the schedule idles or stops."""
        self._stop_trace()
        self._trace_ready()
        if current is not None and current != ProfilerAction.NONE:
            self._prepare_trace()
            if current != ProfilerAction.WARMUP:
                self._start_trace()

    def _prepare_trace(self) -> None:
        self._recorder = Recorder(self.record_shapes, self.profile_memory, self.with_stack)

    def _start_trace(self) -> None:
        if RECORDING.recorder is not None and RECORDING.recorder is not self._recorder:
            raise RuntimeError("kiln.profiler: another profiler is already recording; stop it before starting this one "
                               "(profilers do not nest)")
        RECORDING.recorder = self._recorder

    def _stop_trace(self) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        if RECORDING.recorder is recorder:
            RECORDING.recorder = None
        recorder.close_all()
        self._events = sorted(recorder.events, key=lambda event: event.start_ns)
        self._recorder = None

    def _trace_ready(self) -> None:
        if self.on_trace_ready is not None:
            self.on_trace_ready(self)

    def events(self) -> EventList:
        """Every event of the last trace, by start time."""
        return EventList(self._events, record_shapes=self.record_shapes, profile_memory=self.profile_memory)

    def key_averages(self, group_by_input_shape: bool = False) -> EventList:
        return self.events().key_averages(group_by_input_shape)

    def export_chrome_trace(self, path: str | os.PathLike[str]) -> None:
        write_chrome_trace(self._events, path)


def _action(action: Any) -> ProfilerAction:
    """A schedule's answer as kiln's ``ProfilerAction``: torch's own ``torch.profiler.schedule`` works too (by name)."""
    if isinstance(action, ProfilerAction):
        return action
    name = getattr(action, "name", None)
    if name not in ProfilerAction.__members__:
        raise ValueError(f"kiln.profiler.profile: the schedule returned {action!r}; return a "
                         f"kiln.profiler.ProfilerAction ({', '.join(ProfilerAction.__members__)})")
    return ProfilerAction[name]


def _checked_activities(activities: Iterable[ProfilerActivity] | None) -> set[ProfilerActivity]:
    chosen = set(activities) if activities is not None else {ProfilerActivity.CPU}
    for activity in chosen:
        if not isinstance(activity, ProfilerActivity):
            raise TypeError(f"kiln.profiler.profile: activities holds {activity!r}; pass kiln.profiler.ProfilerActivity.CPU "
                            "(or .CUDA)")
    if ProfilerActivity.CUDA in chosen:
        warnings.warn("kiln.profiler: ProfilerActivity.CUDA is unavailable: kiln records no device timeline (no GPU "
                      "kernel or memcpy events, with or without a GPU); CPU-side events are recorded", stacklevel=3)
    return chosen


def tensorboard_trace_handler(dir_name: str, worker_name: str | None = None,
                              use_gzip: bool = False) -> Callable[[profile], None]:
    """An ``on_trace_ready`` that writes each trace as ``<dir>/<worker>.<ns>.pt.trace.json[.gz]`` (torch's names)."""
    worker = worker_name or f"{socket.gethostname()}_{os.getpid()}"

    def handler(prof: profile) -> None:
        try:
            os.makedirs(dir_name, exist_ok=True)
        except OSError as error:
            raise RuntimeError(f"tensorboard_trace_handler: cannot create the trace folder {dir_name!r}: {error}") from error
        name = f"{worker}.{time.time_ns()}.pt.trace.json" + (".gz" if use_gzip else "")
        prof.export_chrome_trace(os.path.join(dir_name, name))

    return handler


__all__ = ["EventList", "ProfilerAction", "ProfilerActivity", "profile", "record_function", "schedule",
           "supported_activities", "tensorboard_trace_handler"]
