"""The protobuf wire format, encode side only: enough to write TensorBoard's ``Event`` messages without protobuf.

A message is its fields' encodings concatenated; a field is a key (``number << 3 | wire type``) then its payload:

    wire type 0 (varint)  int32/int64/enum/bool   7 bits a byte, low group first, high bit = more follows
    wire type 1 (64-bit)  double                  8 bytes little-endian
    wire type 2 (length)  string/bytes/message/packed repeated   varint length, then the bytes
    wire type 5 (32-bit)  float                   4 bytes little-endian

As protobuf's own ``SerializeToString`` does for proto3, a field holding its default (0, 0.0, False, "", empty) is
left out, unless it is a member of a ``oneof`` (``keep_default=True``): there, being set is the information.
Writing the fields in ascending field number, as callers here do, gives the bytes protobuf writes.
"""

from __future__ import annotations

import struct
from typing import Iterable

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def varint(value: int) -> bytes:
    """``value`` as a base-128 varint; a negative int64 as its 64-bit two's complement (ten bytes), as protobuf."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def int_field(number: int, value: int | bool, keep_default: bool = False) -> bytes:
    """An int32, int64, enum or bool field (wire type 0)."""
    if not value and not keep_default:
        return b""
    return _key(number, _VARINT) + varint(int(value))


def double_field(number: int, value: float, keep_default: bool = False) -> bytes:
    """A ``double`` field (wire type 1)."""
    if value == 0.0 and not keep_default and not _is_negative_zero(value):
        return b""
    return _key(number, _FIXED64) + struct.pack("<d", value)


def float_field(number: int, value: float, keep_default: bool = False) -> bytes:
    """A ``float`` field (wire type 5): ``value`` rounded to float32."""
    if value == 0.0 and not keep_default and not _is_negative_zero(value):
        return b""
    return _key(number, _FIXED32) + struct.pack("<f", value)


def bytes_field(number: int, value: bytes | str, keep_default: bool = False) -> bytes:
    """A ``string`` (UTF-8), ``bytes`` or embedded-message field (wire type 2)."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not data and not keep_default:
        return b""
    return _key(number, _LENGTH_DELIMITED) + varint(len(data)) + data


def message_field(number: int, message: bytes | None) -> bytes:
    """An embedded message: absent when ``None``, present (possibly empty) otherwise, as a set submessage is."""
    return b"" if message is None else bytes_field(number, message, keep_default=True)


def packed_doubles_field(number: int, values: Iterable[float]) -> bytes:
    """A packed ``repeated double`` (one length-delimited run of 8-byte values); absent when empty."""
    values = list(values)
    return bytes_field(number, struct.pack(f"<{len(values)}d", *values))


def packed_floats_field(number: int, values: Iterable[float]) -> bytes:
    """A packed ``repeated float``; absent when empty."""
    values = list(values)
    return bytes_field(number, struct.pack(f"<{len(values)}f", *values))


def repeated_bytes_field(number: int, values: Iterable[bytes | str]) -> bytes:
    """A ``repeated string``/``bytes``/message field: one key-length-payload per element, empty ones kept."""
    return b"".join(bytes_field(number, value, keep_default=True) for value in values)


def _is_negative_zero(value: float) -> bool:
    """-0.0 differs from the default 0.0 in its sign bit, so protobuf writes it."""
    return struct.pack("<d", value)[7] == 0x80
