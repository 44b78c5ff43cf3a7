"""``benchmarks/running_scans.py`` runs (tiny sizes) and its "before" baselines, the old log-depth scans, still give
NumPy's ``accumulate`` (the script checks each against it); no timing is checked here."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks"))
import running_scans  # noqa: E402


def test_the_benchmark_runs_and_its_baselines_agree(capsys):
    running_scans.main(["--sizes", "5,16", "--rows", "2", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all("before/after" in line for line in lines)
