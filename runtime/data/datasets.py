"""Datasets with no download: scikit-learn's bundled digits, and MNIST-format IDX files a user has.

IDX is the format of MNIST and Fashion-MNIST: a magic number naming the
element type and rank, big-endian dims, then the raw data (optionally gzip).
"""

from __future__ import annotations

import gzip
import os
from typing import BinaryIO

import numpy as np

from kiln.compiler.errors import KilnError

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(KilnError):
    """A data file is missing or malformed; the message names it."""


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: ``(1797, 64)`` float32 in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (``.gz`` or not) into an array of its declared type and shape."""
    if not os.path.exists(path):
        raise DataError(f"IDX file {path} does not exist")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as file:
        return _read_idx_stream(file, path)


def _read_idx_stream(file: BinaryIO, path: str) -> np.ndarray:
    header = file.read(4)
    if len(header) != 4 or header[:2] != b"\x00\x00" or header[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {header.hex()!r}); expected MNIST-format data")
    rank = header[3]
    dims = np.frombuffer(file.read(4 * rank), dtype=">u4")
    if len(dims) != rank:
        raise DataError(f"{path} is truncated: its header declares {rank} dims")
    dtype = np.dtype(_IDX_TYPES[header[2]])
    count = int(np.prod(dims, dtype=np.int64))
    data = np.frombuffer(file.read(count * dtype.itemsize), dtype=dtype)
    if data.size != count:
        raise DataError(f"{path} is truncated: expected {count} elements of shape {tuple(dims)}, found {data.size}")
    return data.reshape(tuple(int(d) for d in dims)).astype(dtype.newbyteorder("="))


def load_idx_dataset(directory: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format images flattened to ``(N, rows*cols)`` float32 in [0, 1], and int64 labels."""
    images_name, labels_name = MNIST_FILES[split]
    images = read_idx(_find(directory, images_name))
    labels = read_idx(_find(directory, labels_name))
    if len(images) != len(labels):
        raise DataError(f"{directory}: {len(images)} images but {len(labels)} labels in the {split} split")
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat / 255.0, labels.astype(np.int64)


def _find(directory: str, stem: str) -> str:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise DataError(f"no {stem}[.gz] in {directory}; expected MNIST-format IDX files there")


def train_test_split(x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2, seed: int = 0):
    """A seeded shuffle split into ``(x_train, y_train, x_test, y_test)``."""
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(round(len(x) * (1 - test_fraction)))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


def load_npz(path: str, keys: tuple[str, ...] = ("x", "y")) -> tuple[np.ndarray, ...]:
    """The arrays ``keys`` of an ``.npz`` file, read with ``allow_pickle=False`` (object arrays are refused)."""
    if not os.path.exists(path):
        raise DataError(f"NPZ file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise DataError(f"{path} has no array {missing[0]!r}; it holds {archive.files}; pass keys=(...) naming them")
            return tuple(archive[key] for key in keys)
    except DataError:
        raise
    except Exception as error:  # zipfile, ValueError (pickled objects), OSError: all mean a bad file
        raise DataError(f"{path} is not a readable NPZ file ({type(error).__name__}: {error})") from error


def load_csv(path: str, label_column: int = -1, delimiter: str = ",", skip_header: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A numeric CSV as float32 features and int64 labels (``label_column``); a header row is detected and skipped."""
    if not os.path.exists(path):
        raise DataError(f"CSV file {path} does not exist")
    with open(path, encoding="utf-8") as file:
        lines = [line for line in file.read().splitlines() if line.strip()]
    if skip_header is None:
        skip_header = bool(lines) and not _is_numeric_row(lines[0], delimiter)
    rows = [_parse_row(line, delimiter, path, number) for number, line in enumerate(lines[int(skip_header):], 1 + int(skip_header))]
    if not rows or len({len(row) for row in rows}) != 1:
        raise DataError(f"{path}: expected rows of equally many numbers, found lengths {sorted({len(r) for r in rows})}")
    table = np.array(rows, dtype=np.float64)
    labels = table[:, label_column]
    return np.delete(table, label_column % table.shape[1], axis=1).astype(np.float32), labels.astype(np.int64)


def _is_numeric_row(line: str, delimiter: str) -> bool:
    try:
        [float(cell) for cell in line.split(delimiter)]
        return True
    except ValueError:
        return False


def _parse_row(line: str, delimiter: str, path: str, number: int) -> list[float]:
    try:
        return [float(cell) for cell in line.split(delimiter)]
    except ValueError as error:
        raise DataError(f"{path}:{number}: not a row of numbers ({error}): {line[:80]!r}") from error
