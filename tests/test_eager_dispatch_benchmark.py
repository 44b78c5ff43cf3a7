"""benchmarks/eager_dispatch.py: each row's three candidates (kiln eager, torch eager, NumPy) compute the same values,
and a tiny run prints every row with its ratios. No timing is checked."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from oracles import require_torch

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def eager_dispatch():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import eager_dispatch
    finally:
        sys.path.remove(str(BENCHMARKS))
    return eager_dispatch


def test_every_rows_candidates_compute_the_same_values(eager_dispatch):
    require_torch()
    rows = dict(eager_dispatch.op_rows(5), mlp=eager_dispatch.mlp_row())
    assert len(rows) == 8
    for name, candidates in rows.items():
        kiln_result, torch_result, numpy_result = (np.asarray(candidates[key]().detach() if key == "torch" else candidates[key]())
                                                   for key in ("kiln", "torch", "numpy"))
        np.testing.assert_allclose(kiln_result, torch_result, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(numpy_result, torch_result, rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_tiny_run_prints_every_row():
    require_torch()
    done = subprocess.run([sys.executable, str(BENCHMARKS / "eager_dispatch.py"), "--calls", "3", "--rounds", "1", "--clock", "cpu"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.count("|") == 5][2:]
    assert [row[0].strip() for row in rows] == ["a + b", "a * 2.0", "a.relu()", "a.sum(1)", "a.reshape(-1)", "a.softmax(1)",
                                                "F.linear(a, w, bias)", "MLP forward, batch 128"]
    for row in rows:
        assert all(float(cell.strip().rstrip("x")) > 0 for cell in row[1:])
