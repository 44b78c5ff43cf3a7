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

from kiln.runtime.tensorboard_proto import FILE_VERSION, event

_CASTAGNOLI_REVERSED = 0x82F63B78
"""CRC-32C's polynomial (Castagnoli), bit-reversed for the LSB-first table algorithm."""


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CASTAGNOLI_REVERSED if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc_table()
_FILE_COUNTER = itertools.count()
"""Distinguishes files one process opens in the same second (the last part of the file name, as TensorBoard's)."""


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, one table lookup a byte (``crc32c(b"123456789") == 0xE3069283``)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


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

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.pending: list[bytes] = []
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None

    def flush(self) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.file.closed:
                return
            self.file.write(b"".join(self.pending))
            self.pending.clear()
            self.file.flush()

    def close(self) -> None:
        self.flush()
        with self.lock:
            self.file.close()


class EventFileWriter:
    """Writes ``Event`` messages to a new file ``events.out.tfevents.<time>.<host>.<pid>.<n><suffix>`` in
    ``log_dir``. Records are written ``max_queue`` at a time, at the latest ``flush_secs`` after the first one
    waiting (a daemon timer), and on ``flush()``/``close()``."""

    def __init__(self, log_dir: str, max_queue: int = 10, flush_secs: float = 120, filename_suffix: str = "") -> None:
        self.log_dir = str(log_dir)
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.path = os.path.join(self.log_dir, _file_name(filename_suffix))
        self._sink = _RecordSink(_open_new_file(self.log_dir, self.path))
        self._finalizer = weakref.finalize(self, self._sink.close)
        self.add_event(event(time.time(), file_version=FILE_VERSION, source_writer="kiln.utils.tensorboard"))
        self.flush()

    @property
    def closed(self) -> bool:
        return self._sink.file.closed

    def add_event(self, event_bytes: bytes) -> None:
        """Queue one serialized ``Event``."""
        if self.closed:
            raise ValueError(f"event file {self.path} is closed; open a new SummaryWriter to log more")
        with self._sink.lock:
            self._sink.pending.append(frame_record(event_bytes))
            full = len(self._sink.pending) >= self.max_queue
            if not full and self._sink.timer is None:
                self._sink.timer = threading.Timer(self.flush_secs, self._sink.flush)
                self._sink.timer.daemon = True
                self._sink.timer.start()
        if full:
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
