"""CRC-32C (Castagnoli), the checksum of TFRecord files, in NumPy: no compiled extension needed.

The byte-at-a-time table algorithm is ``crc = TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)``, linear over GF(2) in the
register and the data together. So a long input is cut into equal lanes whose registers (each started at 0) advance
side by side, two bytes a step through a 65536-entry table (one vectorized lookup per column of 16-bit words),
and the lanes are chained afterwards:

    register after lane i = shift(register before it) ^ lane_crc[i]

where ``shift`` advances a register over ``LANE`` zero bytes: a linear map, applied as four 256-entry tables (one
per register byte). Short inputs take the plain loop. ``crc32c(b"123456789") == 0xE3069283``.
"""

from __future__ import annotations

import functools

import numpy as np

_CASTAGNOLI_REVERSED = 0x82F63B78
"""CRC-32C's polynomial, bit-reversed for the LSB-first table algorithm."""
LANE = 256
"""Bytes per lane of the vectorized path: fewer columns (NumPy calls) against more lanes to chain in Python."""
_VECTORIZED_FROM = 16 * LANE
"""Shorter inputs (every scalar and text record) go through the plain loop."""


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_CASTAGNOLI_REVERSED), table >> 1).astype(np.uint32)
    return table


def _word_table(table: np.ndarray) -> np.ndarray:
    """``WORD_TABLE[v]``: a register holding only the 16 bits ``v`` after two byte steps over zero bytes."""
    once = table[np.arange(65536, dtype=np.uint32) & 0xFF] ^ (np.arange(65536, dtype=np.uint32) >> 8)
    return table[once & 0xFF] ^ (once >> 8)


_TABLE = _byte_table()
_TABLE_LIST = _TABLE.tolist()
_WORD_TABLE = _word_table(_TABLE)


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (initial register all ones, final complement, as iSCSI and TFRecord use it)."""
    register = 0xFFFFFFFF
    head = len(data) - len(data) % LANE if len(data) >= _VECTORIZED_FROM else 0
    if head:
        words = np.frombuffer(data, np.dtype("<u2"), count=head // 2).reshape(-1, LANE // 2)
        register = _advance_lanes(register, words)
    return _advance_bytes(register, memoryview(data)[head:]) ^ 0xFFFFFFFF


def _advance_bytes(register: int, data: memoryview) -> int:
    table = _TABLE_LIST
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _advance_lanes(register: int, lanes: np.ndarray) -> int:
    """The register after every row of ``lanes`` (rows of ``LANE`` bytes as little-endian 16-bit words, in
    order), starting from ``register``."""
    lane_crcs = _zero_started_registers(lanes)
    shift = _shift_tables()
    for lane_crc in lane_crcs.tolist():
        register = (
            shift[0][register & 0xFF] ^ shift[1][(register >> 8) & 0xFF]
            ^ shift[2][(register >> 16) & 0xFF] ^ shift[3][register >> 24] ^ lane_crc
        )  # fmt: skip
    return register


def _zero_started_registers(lanes: np.ndarray) -> np.ndarray:
    """Each row's register from 0, all rows at once: one word-table lookup a column, in place."""
    registers = np.zeros(lanes.shape[0], np.uint32)
    index = np.empty_like(registers)
    looked_up = np.empty_like(registers)
    for column in np.ascontiguousarray(lanes.T).astype(np.uint32):
        np.bitwise_xor(registers, column, out=index)
        np.bitwise_and(index, 0xFFFF, out=index)
        np.take(_WORD_TABLE, index, out=looked_up)
        np.right_shift(registers, 16, out=registers)
        np.bitwise_xor(registers, looked_up, out=registers)
    return registers


@functools.cache
def _shift_tables() -> tuple[list[int], list[int], list[int], list[int]]:
    """``shift[j][b]``: the register ``b << 8j`` advanced over ``LANE`` zero bytes (1024 registers side by side)."""
    registers = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]).ravel()
    for _ in range(LANE):
        registers = _TABLE[registers & 0xFF] ^ (registers >> 8)
    rows = registers.reshape(4, 256).tolist()
    return rows[0], rows[1], rows[2], rows[3]
