"""TensorBoard event files: TFRecord framing with CRC-32C, and a writer that batches records to disk.

An event file is a sequence of records, each

    uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

where ``data`` is one serialized ``Event`` (runtime/tensorboard_proto.py) and the mask is TensorFlow's
``((crc >> 15) | (crc << 17)) + 0xa282ead8`` (mod 2**32). The first record names the file version.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
import time
import weakref
from typing import BinaryIO

from kiln.runtime.crc32c import crc32c
from kiln.runtime.tensorboard_proto import FILE_VERSION, event

_FILE_COUNTER = itertools.count()
"""Distinguishes files one process opens in the same second (the last part of the file name, as TensorBoard's)."""


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add a constant, so a CRC of CRCs stays well spread."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """``data`` as one TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


class _RecordSink:
    """The open file and the framed records not yet written; shared with the finalizer, so that a writer dropped
    without ``close()`` still writes what it was given when it is collected or at interpreter exit."""

    def __init__(self, file: BinaryIO, flush_secs: float) -> None:
        self.file = file
        self.flush_secs = flush_secs
        self.pending: list[bytes] = []
        self.first_pending_at = 0.0
        """``time.monotonic()`` when the oldest waiting record came."""
        self.lock = threading.Lock()

    def flush(self) -> None:
        with self.lock:
            if self.file.closed:
                return
            self.file.write(b"".join(self.pending))
            self.pending.clear()
            self.file.flush()

    def flush_if_due(self) -> None:
        if self.pending and time.monotonic() - self.first_pending_at >= self.flush_secs:
            self.flush()

    def close(self) -> None:
        self.flush()
        with self.lock:
            self.file.close()


class _PeriodicFlusher:
    """One daemon thread for every event file of the process: twice a second it writes the records of each file
    whose oldest has waited ``flush_secs`` (one thread, not one per writer or per batch: starting a thread costs
    more than encoding a hundred scalars)."""

    period = 0.5

    def __init__(self) -> None:
        self.sinks: weakref.WeakSet[_RecordSink] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def watch(self, sink: _RecordSink) -> None:
        with self.lock:
            self.sinks.add(sink)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="kiln-event-file-flusher", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.period)
            with self.lock:
                sinks = list(self.sinks)
            for sink in sinks:
                sink.flush_if_due()


_FLUSHER = _PeriodicFlusher()


class EventFileWriter:
    """Writes ``Event`` messages to a new file ``events.out.tfevents.<time>.<host>.<pid>.<n><suffix>`` in
    ``log_dir``. Records are written ``max_queue`` at a time, at the latest about ``flush_secs`` after the first
    one waiting (checked on each add and twice a second by a daemon thread), and on ``flush()``/``close()``."""

    def __init__(self, log_dir: str, max_queue: int = 10, flush_secs: float = 120, filename_suffix: str = "") -> None:
        self.log_dir = str(log_dir)
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.path = os.path.join(self.log_dir, _file_name(filename_suffix))
        self._sink = _RecordSink(_open_new_file(self.log_dir, self.path), flush_secs)
        self._finalizer = weakref.finalize(self, self._sink.close)
        _FLUSHER.watch(self._sink)
        self.add_event(event(time.time(), file_version=FILE_VERSION, source_writer="kiln.utils.tensorboard"))
        self.flush()

    @property
    def closed(self) -> bool:
        return self._sink.file.closed

    def add_event(self, event_bytes: bytes) -> None:
        """Queue one serialized ``Event``."""
        if self.closed:
            raise ValueError(f"event file {self.path} is closed; open a new SummaryWriter to log more")
        record, sink = frame_record(event_bytes), self._sink
        with sink.lock:
            if not sink.pending:
                sink.first_pending_at = time.monotonic()
            sink.pending.append(record)
            due = len(sink.pending) >= self.max_queue or time.monotonic() - sink.first_pending_at >= self.flush_secs
        if due:
            self.flush()

    def flush(self) -> None:
        """Write every queued record to disk."""
        self._sink.flush()

    def close(self) -> None:
        """Flush and close the file (again: nothing)."""
        self._finalizer()


def _file_name(suffix: str) -> str:
    host, pid, number = socket.gethostname(), os.getpid(), next(_FILE_COUNTER)
    return f"events.out.tfevents.{int(time.time()):010d}.{host}.{pid}.{number}{suffix}"


def _open_new_file(log_dir: str, path: str) -> BinaryIO:
    try:
        os.makedirs(log_dir, exist_ok=True)
        return open(path, "xb")
    except OSError as error:
        raise OSError(
            f"SummaryWriter cannot create its event file {path!r}: {error.strerror or error}; pass a log_dir that is "
            "a writable folder (it is created if missing)"
        ) from error
