"""NPZ, CSV and IDX files: arrays come back; a missing or malformed file is named in the error."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from kiln.runtime.data import DataError, load_csv, load_idx_dataset, load_npz, read_idx


def test_npz_round_trip_and_errors(tmp_path):
    x, y = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32), np.arange(5)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    loaded_x, loaded_y = load_npz(str(tmp_path / "data.npz"))
    np.testing.assert_array_equal(loaded_x, x)
    np.testing.assert_array_equal(loaded_y, y)
    with pytest.raises(DataError, match="missing.npz does not exist"):
        load_npz(str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match="no array 'labels'"):
        load_npz(str(tmp_path / "data.npz"), keys=("x", "labels"))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="broken.npz is not a readable NPZ"):
        load_npz(str(tmp_path / "broken.npz"))
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object), y=y)
    with pytest.raises(DataError, match="objects.npz"):  # object arrays would need pickle: refused
        load_npz(str(tmp_path / "objects.npz"))


def test_csv_with_and_without_header(tmp_path):
    (tmp_path / "table.csv").write_text("a,b,label\n1,2,0\n3.5,4,1\n\n")
    x, y = load_csv(str(tmp_path / "table.csv"))
    np.testing.assert_array_equal(x, [[1, 2], [3.5, 4]])
    np.testing.assert_array_equal(y, [0, 1])
    (tmp_path / "plain.csv").write_text("0;1;2\n1;3;4\n")
    x, y = load_csv(str(tmp_path / "plain.csv"), label_column=0, delimiter=";")
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])
    (tmp_path / "bad.csv").write_text("1,2,0\n3,x,1\n")
    with pytest.raises(DataError, match=r"bad.csv:2: not a row of numbers"):
        load_csv(str(tmp_path / "bad.csv"))
    with pytest.raises(DataError, match="does not exist"):
        load_csv(str(tmp_path / "nope.csv"))


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as file:
        file.write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_dataset_gzip_or_not(tmp_path, compress):
    suffix = ".gz" if compress else ""
    images = np.random.default_rng(0).integers(0, 256, (6, 4, 4))
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(6), compress)
    x, y = load_idx_dataset(str(tmp_path), "test")
    assert x.shape == (6, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x * 255, images.reshape(6, 16))
    np.testing.assert_array_equal(y, np.arange(6))


def test_truncated_idx_is_named(tmp_path):
    write_idx(tmp_path / "images", np.zeros((3, 2, 2)), compress=False)
    data = (tmp_path / "images").read_bytes()
    (tmp_path / "images").write_bytes(data[:-3])
    with pytest.raises(DataError, match="images is truncated"):
        read_idx(str(tmp_path / "images"))
