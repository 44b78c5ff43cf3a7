"""Zip members memory-mapped in place, for ``kiln.load(path, mmap=True)`` (``torch.load``'s ``mmap``).

Both checkpoint formats store their arrays uncompressed (``torch.save``'s ``data/<key>`` members, NumPy's ``.npy``
members of kiln's NPZ file), so a member's bytes lie as they are at a fixed offset of the file. Mapped copy-on-write,
as torch maps them (``MAP_PRIVATE``): pages are read when touched, and writes to a loaded tensor never reach the file.
"""

from __future__ import annotations

import struct
import zipfile

import numpy as np

LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
"""A zip local file header: signature ... file name length, extra field length (the data follows them)."""
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
"""NumPy's public ``.npy`` header readers by format version (a version 3 member is read, not mapped)."""


def member_offset(path: str, info: zipfile.ZipInfo) -> int | None:
    """Where ``info``'s bytes start in the file at ``path``; None for a compressed member, which cannot be mapped."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as file:
        file.seek(info.header_offset)
        fields = LOCAL_HEADER.unpack(file.read(LOCAL_HEADER.size))
    if fields[0] != b"PK\x03\x04":
        raise ValueError(f"member {info.filename}: no local header at offset {info.header_offset}")
    return info.header_offset + LOCAL_HEADER.size + fields[-2] + fields[-1]


def mapped_words(path: str, info: zipfile.ZipInfo, dtype: np.dtype, count: int) -> np.ndarray | None:
    """The member's ``count`` elements of ``dtype``, mapped; None where the member cannot be mapped."""
    offset = member_offset(path, info)
    if offset is None or info.file_size != count * dtype.itemsize:
        return None
    if count == 0:
        return np.empty(0, dtype)
    return np.asarray(np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=(count,)))


def mapped_npy(path: str, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The ``.npy`` member ``info`` as an array mapped from the file; None where it cannot be mapped."""
    offset = member_offset(path, info)
    if offset is None:
        return None
    with open(path, "rb") as file:
        file.seek(offset)
        reader = HEADER_READERS.get(np.lib.format.read_magic(file))
        if reader is None:
            return None
        shape, fortran, dtype = reader(file)
        data = file.tell()
    if dtype.hasobject:
        return None
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.empty(shape, dtype)
    return np.asarray(np.memmap(path, dtype=dtype, mode="c", offset=data, shape=shape, order="F" if fortran else "C"))


__all__ = ["mapped_npy", "mapped_words", "member_offset"]
