"""Recorded events as torch.profiler gives them: ``EventList``, ``key_averages``, the table and the Chrome trace.

Times are microseconds, as torch's: ``cpu_time_total`` from an event's start to its end, ``self_cpu_time_total``
without the events inside it (same thread). An average row sums its events' times; its ``cpu_time`` is the mean.
The table's percentages are of the summed self time of all rows (torch's ``Self CPU time total``), so the
``Self CPU %`` column adds up to 100%.
"""

from __future__ import annotations

import gzip
import io
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
    input_shapes: list[list[Any]] = field(default_factory=list)
    """The operands' shapes where grouped by input shape (``key_averages(group_by_input_shape=True)``), else empty."""

    @property
    def cpu_time(self) -> float:
        """Mean microseconds per call, children included."""
        return self.cpu_time_total / self.count if self.count else 0.0

    def add(self, event: Event | "FunctionEventAvg") -> None:
        if self.count == 0:
            self.input_shapes = event.input_shapes
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
        if not group_by_input_shape:
            for row in rows.values():
                row.input_shapes = []  # as torch's: a row of several calls has no one list of shapes
        return EventList(rows.values(), record_shapes=self.record_shapes, profile_memory=self.profile_memory)

    def sorted_by(self, sort_by: str | None) -> list[Any]:
        if sort_by is None:
            return list(self)
        if sort_by not in SORT_KEYS:
            raise ValueError(f"sort_by={sort_by!r}: kiln.profiler records CPU times only; sort by one of {SORT_KEYS}")
        return sorted(self, key=lambda item: getattr(item, sort_by), reverse=True)

    def table(self, sort_by: str | None = None, row_limit: int = 100, max_name_column_width: int = 55,
              max_shapes_column_width: int = 80, header: str | None = None, top_level_events_only: bool = False) -> str:
        """The rows as torch's profiler prints them (``row_limit`` < 0: all), column for column."""
        rows = self.sorted_by(sort_by)
        shown = [row for row in rows if not (top_level_events_only and getattr(row, "parent", None) is not None)]
        layout = TableLayout(rows, self.profile_memory, max_name_column_width, max_shapes_column_width)
        return layout.text(shown[:row_limit] if row_limit >= 0 else shown, self.self_cpu_time_total, header,
                           top_level_events_only)

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
    """torch's ``_format_memory``: ``512 B``, ``1.50 KB``, ``2.00 MB``, ``1.00 GB``."""
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if abs(count) >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} B"


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%" if whole > 0 else "0.00%"


class TableLayout:
    """torch's ``_build_table`` for CPU rows: column widths from all rows (before ``row_limit``), two spaces after
    each column, names clipped at ``max_name_column_width - 3`` with ``...``; the ``Input Shapes`` column where the
    rows were grouped by input shape (as torch, ungrouped averages carry no shapes)."""

    def __init__(self, rows: list[Any], profile_memory: bool, max_name_width: int, max_shapes_width: int):
        self.profile_memory = profile_memory
        self.max_name_width = max_name_width
        self.with_shapes = any(row.input_shapes for row in rows)
        name_width = min(max([len(row.key) for row in rows], default=0) + 4, max_name_width)
        shapes_width = min(max([len(str(row.input_shapes)) for row in rows], default=0) + 4, max_shapes_width)
        self.titles = ["Name", "Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg"]
        self.titles += ["CPU Mem", "Self CPU Mem"] if profile_memory else []
        self.titles += ["# of Calls"] + (["Input Shapes"] if self.with_shapes else [])
        self.widths = [name_width] + [12] * (len(self.titles) - 1 - self.with_shapes) + [shapes_width] * self.with_shapes

    def line(self, values: list[str]) -> str:
        return "".join(value.rjust(width) + "  " for value, width in zip(values, self.widths))

    def cells(self, row: Any, total: float) -> list[str]:
        name = row.key if len(row.key) < self.max_name_width - 3 else row.key[: self.max_name_width - 3] + "..."
        cells = [name, _percent(row.self_cpu_time_total, total), format_time(row.self_cpu_time_total),
                 _percent(row.cpu_time_total, total), format_time(row.cpu_time_total), format_time(row.cpu_time)]
        if self.profile_memory:
            cells += [format_bytes(row.cpu_memory_usage), format_bytes(row.self_cpu_memory_usage)]
        cells.append(str(row.count))
        return cells + ([str(row.input_shapes)[: self.widths[-1]]] if self.with_shapes else [])

    def text(self, rows: list[Any], total: float, header: str | None, top_level_only: bool) -> str:
        separator = "".join("-" * width + "  " for width in self.widths)
        ruler = "=" * (len(separator) - 2)
        lines = [ruler, header] if header is not None else []
        lines += [ruler, "This report only display top-level ops statistics"] if top_level_only else []
        lines += [separator, self.line(self.titles), separator]
        lines += [self.line(self.cells(row, total)) for row in rows]
        lines += [separator, f"Self CPU time total: {format_time(total)}"]
        return "\n".join(lines) + "\n"


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
    """Write the trace (gzipped where ``path`` ends in ``.gz``, as torch's) to a temporary file beside ``path``, then
    rename it there: a reader never sees half a file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=".kiln-trace-", suffix=".json", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as raw, (gzip.open(raw, "wt") if path.endswith(".gz") else io.TextIOWrapper(raw)) as file:
            json.dump(chrome_trace(events), file)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
