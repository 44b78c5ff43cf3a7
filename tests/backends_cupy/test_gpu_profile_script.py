"""benchmarks/gpu_profile.py without a GPU: it says why and exits 2; on the NumPy stand-in for CuPy its measuring and
its tables run on the tiny GPT's profiled step (the times are the stand-in's, the tables' shape is the point)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def load_profile():
    sys.path[:0] = [str(BENCHMARKS)]
    spec = importlib.util.spec_from_file_location("gpu_profile", BENCHMARKS / "gpu_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_why_and_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert load_profile().main(["--layers", "1"]) == 2
    assert "gpu_profile needs CuPy and an NVIDIA GPU: cupy is not importable" in capsys.readouterr().err


def test_tables_of_the_tiny_gpts_profiled_step(fake, monkeypatch):
    from cupy_models import GPT_SHAPE, MODELS, step_for

    profile = load_profile()
    monkeypatch.setenv("KILN_CUPY_PROFILE", "1")
    _, step, rng = step_for("gpt", "cupy")
    args = profile.parse_args(["--layers", str(GPT_SHAPE["layers"]), "--steps", "2", "--warmup", "1", "--top", "5"])
    batch = MODELS["gpt"][1](rng)
    args.vocab, args.context, args.heads, args.d_model = (GPT_SHAPE[k] for k in ("vocab", "context", "heads", "d_model"))
    args.batch = len(batch[0])
    executable, medians = profile.op_medians(step, batch, args)
    assert sorted(medians) == list(range(len(executable.graph.ops)))
    lines = profile.report(executable.graph, medians, args)
    text = "\n".join(lines)
    for heading in ("launch kind", "category", "slowest 5 ops", "gemm", "row", "logits", "other"):  # its scores are as wide as a head
        assert heading in text, heading
    slowest = [float(line.split()[0]) for line in lines[lines.index("slowest 5 ops") + 2:]]
    assert len(slowest) == 5 and slowest == sorted(slowest, reverse=True)
