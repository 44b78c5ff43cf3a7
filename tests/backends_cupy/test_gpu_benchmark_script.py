"""benchmarks/gpu_benchmark.py and gpu_check.sh without a GPU: they parse, and fail with one clear message."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", BENCHMARKS / "gpu_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_benchmark"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_arguments_parse_and_unknown_workloads_are_refused():
    benchmark = load_benchmark()
    args = benchmark.parse_args([])
    assert args.workloads == ["w1-128", "w1-4096", "gpt2-small", "w1-4096-f16"] and "torch-compile" in args.implementations
    assert len(benchmark.plan(args)) == 12
    assert [i for w, i in benchmark.plan(args) if w == "w1-4096-f16"] == ["kiln-cupy", "torch-eager", "torch-autocast"]
    assert not [w for w, i in benchmark.plan(args) if i == "torch-autocast" and not w.endswith("-f16")]
    assert benchmark.GPT2_SMALL["layers"] == 12 and benchmark.GPT2_SMALL["context"] == 1024 and benchmark.GPT2_SMALL["batch"] == 8
    with pytest.raises(SystemExit, match="unknown w9"):
        benchmark.parse_args(["--workloads", "w1-128,w9"])


def test_the_unchunked_kiln_row_is_asked_for_by_name_and_restores_the_chunk(monkeypatch):
    """``kiln-cupy-whole`` compiles with CAUSAL_CHUNK 0 (to measure what chunking buys) and leaves it as it was."""
    from kiln.compiler.passes import chunk_causal_attention

    benchmark = load_benchmark()
    assert "kiln-cupy-whole" not in benchmark.parse_args([]).implementations
    args = benchmark.parse_args(["--workloads", "gpt2-small", "--implementations", "kiln-cupy,kiln-cupy-whole"])
    assert benchmark.plan(args) == [("gpt2-small", "kiln-cupy"), ("gpt2-small", "kiln-cupy-whole")]
    seen = []
    monkeypatch.setattr(benchmark, "kiln_gpt", lambda cupy, config: seen.append(chunk_causal_attention.CAUSAL_CHUNK))
    monkeypatch.setattr(benchmark, "time_steps", lambda *a: 1.0)
    monkeypatch.setattr(benchmark, "cupy_events", lambda cupy: None)
    before = chunk_causal_attention.CAUSAL_CHUNK
    for implementation in ("kiln-cupy-whole", "kiln-cupy"):
        benchmark.measure("gpt2-small", implementation, args, cupy=None)
    assert seen == [0, before] and chunk_causal_attention.CAUSAL_CHUNK == before


def test_without_a_gpu_the_benchmark_says_why_and_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert load_benchmark().main(["--workloads", "w1-128"]) == 2
    assert "gpu_benchmark needs CuPy and an NVIDIA GPU: cupy is not importable" in capsys.readouterr().err


def test_rows_format_with_ratios_to_torch_eager():
    benchmark = load_benchmark()
    eager, kiln_row = benchmark.Row("w1-128", "torch-eager", 2.0), benchmark.Row("w1-128", "kiln-cupy", 1.0)
    line = benchmark.format_row(kiln_row, [eager, kiln_row])
    assert "kiln-cupy" in line and "1.000 ms/step" in line and "0.50x" in line
    skipped = benchmark.Row("gpt2-small", "torch-compile", None, "skipped: past the 170 s budget")
    assert "skipped" in benchmark.format_row(skipped, [skipped])


def test_the_summary_repeats_every_row_with_its_ratio_and_matmul_rate():
    """kiln-cupy is timed before torch-eager, so its ratio first appears in the summary."""
    benchmark = load_benchmark()
    args = benchmark.parse_args([])
    rows = [benchmark.Row("gpt2-small", "kiln-cupy", 200.0), benchmark.Row("gpt2-small", "torch-eager", 250.0)]
    assert "0.80x" not in benchmark.format_row(rows[0], rows[:1])
    kiln_line = benchmark.summary(rows, args)[0]
    tflop = benchmark.matmul_tflop("gpt2-small", args)
    assert "0.80x" in kiln_line and f"{tflop / 0.2:8.1f}" in kiln_line
    assert 6 < tflop < 7.5  # GPT-2 small at 8 x 1024 tokens: 7.0 TFLOP of matmuls a step, the full attention counted
    assert benchmark.matmul_tflop("w1-128", args) == pytest.approx(3 * 2 * 128 * (784 * 128 + 128 * 64 + 64 * 10) / 1e12)


def test_gpu_check_script_is_valid_bash_and_installs_without_network():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed here")
    script = BENCHMARKS / "gpu_check.sh"
    subprocess.run([bash, "-n", str(script)], check=True)
    text = script.read_text()
    assert "pip install -q --no-deps --no-build-isolation ." in text and "KILN_REQUIRE_GPU=1" in text
    assert "timeout" in text and "gpu_benchmark.py" in text


def test_kiln_rows_build_and_step_on_the_numpy_stand_in_for_cupy(fake):
    from kiln.runtime.lazy import LazyScalar

    benchmark = load_benchmark()
    assert isinstance(benchmark.kiln_w1(fake, 16)(), LazyScalar)
    loss = benchmark.kiln_w1(fake, 16, half=True)()
    assert isinstance(loss, LazyScalar) and np.isfinite(float(loss))
    tiny = {**benchmark.GPT2_SMALL, "vocab": 13, "context": 8, "d_model": 16, "heads": 2, "layers": 1, "batch": 2}
    assert float(benchmark.kiln_gpt(fake, tiny)()) > 0
