"""The main demo learns: bundled digits, Keras style, and MNIST-format IDX files."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from oracles import require

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "examples"))

import mlp_digits  # noqa: E402


def test_demo_reaches_95_percent_on_held_out_digits():
    assert mlp_digits.train(epochs=20, verbose=False) >= 0.95


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_demo_learns_in_half_precision(dtype):
    assert mlp_digits.train(epochs=20, verbose=False, dtype=dtype) >= 0.95


def test_keras_style_model_learns():
    assert mlp_digits.train(epochs=8, style="keras", verbose=False) >= 0.9


def write_idx(path: str, array: np.ndarray, compress: bool) -> None:
    codes = {np.uint8: 0x08}
    header = struct.pack(">HBB", 0, codes[array.dtype.type], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as file:
        file.write(header + array.tobytes())


def make_mnist_like(directory: str, compress: bool) -> None:
    """Small 28x28 IDX files: each class is a bright block in its own position plus noise."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 600), ("t10k", 200)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
        for index, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[index, 4 + row * 12 : 12 + row * 12, 2 + col * 5 : 6 + col * 5] = 255
        suffix = ".gz" if compress else ""
        write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte{suffix}"), images, compress)
        write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte{suffix}"), labels, compress)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_data_trains_the_784_128_64_10_model(tmp_path, compress):
    make_mnist_like(str(tmp_path), compress)
    assert mlp_digits.train(epochs=3, data_dir=str(tmp_path), verbose=False) >= 0.9


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_demo_script_runs_prints_ir_summary_and_exports_onnx(tmp_path, dtype):
    """The exported file's weights are in the trained dtype (half the bytes in bfloat16), and onnxruntime's accuracy
    with it is kiln's own."""
    onnx_path = tmp_path / "digits.onnx"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "mlp_digits.py"), "--epochs", "3", "--onnx", str(onnx_path), "--dtype", dtype],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "IR summary" in result.stdout and "optim.sgd_update" in result.stdout
    onnx = require("onnx")
    weight = next(t for t in onnx.load(str(onnx_path)).graph.initializer if tuple(t.dims) == (128, 64))
    assert weight.data_type == {"float32": onnx.TensorProto.FLOAT, "bfloat16": onnx.TensorProto.BFLOAT16}[dtype]
    assert "held-out accuracy" in result.stdout
    kiln_accuracy = result.stdout.split("held-out accuracy: ")[1].split()[0]
    assert onnx_path.exists() and f"onnxruntime held-out accuracy: {kiln_accuracy}" in result.stdout


def test_missing_idx_file_names_it(tmp_path):
    from kiln.runtime.data import load_idx_dataset
    from kiln.runtime.data.datasets import DataError

    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_idx_dataset(str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"junk")
    with pytest.raises(DataError, match="truncated|not an IDX"):
        load_idx_dataset(str(tmp_path))
