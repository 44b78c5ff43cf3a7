"""Recorded events as torch.profiler gives them: ``EventList``, ``key_averages``, the table and the Chrome trace.

Times are microseconds, as torch's: ``cpu_time_total`` from an event's start to its end, ``self_cpu_time_total``
without the events inside it (same thread). An average row sums its events' times; its ``cpu_time`` is the mean.
The table's percentages are of the summed self time of all rows (torch's ``Self CPU time total``), so the
``Self CPU %`` column adds up to 100%.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable

from kiln.runtime.profiler_recorder import Event

SORT_KEYS = ("cpu_time_total", "self_cpu_time_total", "cpu_time", "count", "cpu_memory_usage", "self_cpu_memory_usage")
"""What ``table(sort_by=...)`` and ``EventList.sort_by`` accept (descending, as torch's); ``None`` keeps the order."""


@dataclass(eq=False)
class FunctionEventAvg:
    """The events of one name (and, grouped by input shape, one list of operand shapes), summed."""

    key: str
    count: int = 0
    cpu_time_total: float = 0.0
    self_cpu_time_total: float = 0.0
    cpu_memory_usage: int = 0
    self_cpu_memory_usage: int = 0
    input_shapes: list[list[Any]] | str = field(default_factory=list)
    """The operands' shapes; ``"mixed"`` where the row's events (not grouped by shape) had different ones."""

    @property
    def cpu_time(self) -> float:
        """Mean microseconds per call, children included."""
        return self.cpu_time_total / self.count if self.count else 0.0

    def add(self, event: Event | "FunctionEventAvg") -> None:
        if self.count == 0:
            self.input_shapes = event.input_shapes
        elif self.input_shapes != event.input_shapes:
            self.input_shapes = "mixed"
        self.count += event.count
        self.cpu_time_total += event.cpu_time_total
        self.self_cpu_time_total += event.self_cpu_time_total
        self.cpu_memory_usage += event.cpu_memory_usage
        self.self_cpu_memory_usage += event.self_cpu_memory_usage


class EventList(list):
    """Events (``prof.events()``) or averages (``prof.key_averages()``), with torch's ``table`` and friends."""

    def __init__(self, items: Iterable[Any] = (), *, record_shapes: bool = False, profile_memory: bool = False):
        super().__init__(items)
        self.record_shapes, self.profile_memory = record_shapes, profile_memory

    @property
    def self_cpu_time_total(self) -> float:
        return sum(item.self_cpu_time_total for item in self)

    def key_averages(self, group_by_input_shape: bool = False) -> "EventList":
        """One row per event name (per name and operand shapes with ``group_by_input_shape=True``), first seen first."""
        if group_by_input_shape and not self.record_shapes:
            raise ValueError("key_averages(group_by_input_shape=True) needs the shapes: profile with "
                             "kiln.profiler.profile(record_shapes=True)")
        rows: dict[Any, FunctionEventAvg] = {}
        for event in self:
            key = (event.key, repr(event.input_shapes)) if group_by_input_shape else event.key
            rows.setdefault(key, FunctionEventAvg(event.key)).add(event)
        return EventList(rows.values(), record_shapes=self.record_shapes, profile_memory=self.profile_memory)

    def sorted_by(self, sort_by: str | None) -> list[Any]:
        if sort_by is None:
            return list(self)
        if sort_by not in SORT_KEYS:
            raise ValueError(f"sort_by={sort_by!r}: kiln.profiler records CPU times only; sort by one of {SORT_KEYS}")
        return sorted(self, key=lambda item: getattr(item, sort_by), reverse=True)

    def table(self, sort_by: str | None = None, row_limit: int = 100, max_name_column_width: int = 55,
              header: str | None = None, top_level_events_only: bool = False) -> str:
        """The rows as torch's profiler prints them (``row_limit`` < 0: all)."""
        items = [item for item in self if not (top_level_events_only and getattr(item, "parent", None) is not None)]
        rows = EventList(items, record_shapes=self.record_shapes, profile_memory=self.profile_memory).sorted_by(sort_by)
        if row_limit >= 0:
            rows = rows[:row_limit]
        return format_table(rows, self.self_cpu_time_total, self.record_shapes, self.profile_memory,
                            max_name_column_width, header)

    def __str__(self) -> str:
        return self.table()

    def export_chrome_trace(self, path: str | os.PathLike[str]) -> None:
        write_chrome_trace(self, path)


def format_time(microseconds: float) -> str:
    """torch's ``_format_time``: ``123.456us``, ``1.235ms``, ``2.000s``."""
    if microseconds >= 1e6:
        return f"{microseconds / 1e6:.3f}s"
    if microseconds >= 1e3:
        return f"{microseconds / 1e3:.3f}ms"
    return f"{microseconds:.3f}us"


def format_bytes(count: int) -> str:
    """torch's ``_format_memory``: ``512 b``, ``1.50 Kb``, ``2.00 Mb``, ``1.00 Gb``."""
    for unit, size in (("Gb", 1024**3), ("Mb", 1024**2), ("Kb", 1024)):
        if abs(count) >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} b"


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%" if whole > 0 else "0.00%"


def _cells(item: Any, total: float, record_shapes: bool, profile_memory: bool) -> list[str]:
    cells = [_percent(item.self_cpu_time_total, total), format_time(item.self_cpu_time_total),
             _percent(item.cpu_time_total, total), format_time(item.cpu_time_total), format_time(item.cpu_time)]
    if profile_memory:
        cells += [format_bytes(item.cpu_memory_usage), format_bytes(item.self_cpu_memory_usage)]
    cells.append(str(item.count))
    if record_shapes:
        shapes = item.input_shapes
        cells.append(shapes if isinstance(shapes, str) else str(shapes))
    return cells


def format_table(rows: list[Any], total: float, record_shapes: bool, profile_memory: bool, name_width: int,
                 header: str | None) -> str:
    titles = ["Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg"]
    titles += ["CPU Mem", "Self CPU Mem"] if profile_memory else []
    titles += ["# of Calls"] + (["Input Shapes"] if record_shapes else [])
    names = [_clip(row.key, name_width) for row in rows]
    cells = [_cells(row, total, record_shapes, profile_memory) for row in rows]
    widths = [max([len("Name"), *map(len, names)]) + 4] + [max(12, len(title)) for title in titles]
    if record_shapes:
        widths[-1] = max([len(titles[-1]), *(len(row[-1]) for row in cells)])
    line = "  ".join("-" * width for width in widths)

    def row_text(values: list[str]) -> str:
        return "  ".join(value.rjust(width) for value, width in zip(values, widths))

    text = ([header] if header else []) + [line, row_text(["Name", *titles]), line]
    text += [row_text([name, *row]) for name, row in zip(names, cells)]
    text += [line, f"Self CPU time total: {format_time(total)}"]
    return "\n".join(text) + "\n"


def _clip(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def chrome_trace(events: Iterable[Event]) -> dict[str, Any]:
    """The Chrome trace-event JSON (``chrome://tracing``, Perfetto): one complete (``"X"``) event per event."""
    pid = os.getpid()
    trace = []
    for event in events:
        item = {"ph": "X", "cat": event.kind, "name": event.name, "pid": pid, "tid": event.thread,
                "ts": event.start_ns / 1e3, "dur": (event.end_ns - event.start_ns) / 1e3, "args": {}}
        if event.input_shapes:
            item["args"]["Input Dims"] = event.input_shapes
        if event.own_bytes:
            item["args"]["Bytes"] = event.own_bytes
        if event.stack:
            item["args"]["Call stack"] = ";".join(event.stack)
        trace.append(item)
    return {"schemaVersion": 1, "displayTimeUnit": "ms", "traceEvents": trace}


def write_chrome_trace(events: Iterable[Event], path: str | os.PathLike[str]) -> None:
    """Write the trace to a temporary file beside ``path``, then rename it there: a reader never sees half a file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=".kiln-trace-", suffix=".json", dir=folder)
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(chrome_trace(events), file)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
