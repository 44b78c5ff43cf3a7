"""A PNG encoder in pure Python (zlib): 8-bit grayscale, RGB or RGBA images, as TensorBoard's image summaries hold.

A PNG file is its 8-byte signature and chunks, each ``length, type, data, CRC-32(type + data)``: ``IHDR`` (width,
height, bit depth 8, colour type 0 gray / 2 RGB / 6 RGBA, compression 0, filter 0, interlace 0), one ``IDAT``
(the zlib stream of the rows, each prefixed with filter type 0 = none) and ``IEND``.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2, 4: 6}
"""Channels -> PNG colour type (gray, RGB, RGBA)."""


def encode_png(pixels: np.ndarray, compression_level: int = 6) -> bytes:
    """The PNG file of ``pixels``, a ``uint8`` array of shape ``(height, width, channels)`` with 1, 3 or 4 channels."""
    _check_pixels(pixels)
    height, width, channels = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, width * channels)], axis=1)
    image_data = zlib.compress(np.ascontiguousarray(rows).tobytes(), compression_level)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", image_data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _check_pixels(pixels: np.ndarray) -> None:
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in _COLOUR_TYPE:
        raise ValueError(
            f"encode_png: expected uint8 pixels of shape (height, width, 1|3|4), got {pixels.dtype} {pixels.shape}; "
            "convert with (x * 255).clip(0, 255).astype(np.uint8) and move channels last"
        )
    if min(pixels.shape[:2]) == 0:
        raise ValueError(f"encode_png: an image needs at least one pixel, got shape {pixels.shape}")
