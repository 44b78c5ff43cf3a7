"""benchmarks/half_precision.py at a tiny size (``--quick``: W1 and W5 at batch 16, a few steps): its tables print and
its JSON holds every candidate in every dtype, the bytes, the cast profile, the cast throughput and the eager op
times. Losses are checked for what they must be (half losses near float32's, kiln's next to torch's); no timing is."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
DTYPES = ("float32", "float16", "bfloat16")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("half") / "half.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "half_precision.py"), "--quick", "--json", str(path)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(path.read_text())


def test_every_candidate_is_timed_in_every_dtype(quick_run):
    _, report = quick_run
    assert [row["workload"] for row in report["rows"]] == ["W1", "W5"] and all(row["batch"] == 16 for row in report["rows"])
    for row in report["rows"]:
        names = [f"{who} {dtype}" for who in ("kiln-numpy", "torch eager") for dtype in DTYPES]
        names += ["numpy (hand-written) float32"] if row["workload"] == "W1" else []
        assert list(row["median_step_s"]) == names
        assert all(seconds is not None and seconds > 0 for seconds in row["median_step_s"].values())


def test_losses_agree_across_implementations_to_half_precision(quick_run):
    """Same weights and batch: every first-step loss is float32 kiln's to within bfloat16's rounding (2^-8 relative,
    a few times over for the ops in between), and kiln's half loss is torch's in the same dtype to within a few ulps."""
    _, report = quick_run
    for row in report["rows"]:
        loss = row["loss"]
        reference = loss["kiln-numpy float32"]
        assert math.isclose(loss["torch eager float32"], reference, rel_tol=1e-5)
        for dtype, ulp in (("float16", 2.0**-10), ("bfloat16", 2.0**-7)):
            assert math.isclose(loss[f"kiln-numpy {dtype}"], reference, rel_tol=8 * ulp)
            assert math.isclose(loss[f"kiln-numpy {dtype}"], loss[f"torch eager {dtype}"], rel_tol=4 * ulp)


def test_bytes_halve_for_half_parameters_and_the_plan_is_reported(quick_run):
    _, report = quick_run
    for row in report["rows"]:
        sizes = row["bytes"]
        full = sizes["kiln-numpy float32"]
        for dtype in DTYPES[1:]:
            half = sizes[f"kiln-numpy {dtype}"]
            assert half["parameters"] * 2 == full["parameters"] and half["optimizer_state"] * 2 == full["optimizer_state"]
            assert sizes[f"torch eager {dtype}"]["parameters"] == half["parameters"]
        for dtype in DTYPES:
            plan = sizes[f"kiln-numpy {dtype}"]["plan"]
            assert 0 < plan["peak"] <= plan["pooled"] <= plan["unplanned"]
    assert report["rows"][1]["bytes"]["kiln-numpy float32"]["optimizer_state"] > 0  # W5: SGD momentum buffers


def test_the_cast_profile_covers_both_directions_of_each_half_dtype(quick_run):
    _, report = quick_run
    for row in report["rows"]:
        assert list(row["casts"]) == ["float16", "bfloat16"]
        for dtype, seconds in row["casts"].items():
            assert {f"float32->{dtype}", f"{dtype}->float32", "step"} <= set(seconds)
            assert 0 < sum(value for name, value in seconds.items() if name != "step") < seconds["step"]


def test_cast_throughput_and_eager_tables(quick_run):
    stdout, report = quick_run
    casts = {(entry["cast"], entry["values"]) for entry in report["cast_throughput"]}
    assert casts == {(f"{a}->{b}", values) for half in DTYPES[1:] for a, b in (("float32", half), (half, "float32"))
                     for values in ("N(0,1)", "tiny 1e-6")}
    assert all(entry[way] > 0 for entry in report["cast_throughput"] for way in ("astype", "copyto", "kiln"))
    assert set(report["eager_op_us"]) == {f"{who} {op}" for who in ("kiln", "torch") for op in ("a + b", "relu", "a @ b")}
    assert all(set(times) == set(DTYPES) for times in report["eager_op_us"].values())
    for header in ("implementation", "params KiB", "seconds per step in casts", "cast throughput", "eager per-op time"):
        assert header in stdout
