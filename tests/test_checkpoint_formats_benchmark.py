"""benchmarks/checkpoint_formats.py: a tiny run prints every save and load row with seconds, throughput and the ratio
to its torch peer. No timing is checked."""

from __future__ import annotations

import pathlib
import sys

from oracles import require_torch

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_a_tiny_run_prints_every_row(capsys):
    require_torch()
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import checkpoint_formats
    finally:
        sys.path.remove(str(BENCHMARKS))
    checkpoint_formats.main(["--megabytes", "0.5", "--tensors", "2", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["row", "seconds", "MB/s", "/torch"]
    names = [line.rsplit(None, 3)[0] for line in lines[1:]]
    assert names == ["torch.save", "kiln.save .pt (torch format)", "kiln.save .npz (kiln format)", "torch.load torch's file",
                     "torch.load kiln's .pt", "kiln.load kiln's .pt", "kiln.load kiln's .npz", "kiln.load torch's file"]
    assert all(float(value) > 0 for line in lines[1:] for value in line.rsplit(None, 3)[1:])
