"""benchmarks/tensorboard_writer.py: a tiny run prints one row per call with both peers and their ratio. No timing
is checked."""

from __future__ import annotations

import pathlib
import sys

from oracles import require, require_torch

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_a_tiny_run_prints_every_row(capsys):
    require_torch()
    require("tensorboard")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import tensorboard_writer
    finally:
        sys.path.remove(str(BENCHMARKS))
    tensorboard_writer.main(["--repeats", "1", "--calls", "100", "--image-size", "8"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["call", "kiln", "us", "torch", "us", "kiln/torch"]
    names = [line.rsplit(None, 3)[0] for line in lines[1:]]
    assert names == ["add_scalar", "add_histogram (1e5 values)", "add_image (3x8x8 float)"]
    assert all(float(value) > 0 for line in lines[1:] for value in line.rsplit(None, 3)[1:])
