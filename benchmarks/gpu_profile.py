"""GPU time per op of kiln-cupy's GPT-2-small training step: CUDA events between the ops of a profiling build.

    python benchmarks/gpu_profile.py                  # the GPT-2-small step of gpu_benchmark.py
    python benchmarks/gpu_profile.py --layers 2 --top 40

Each op's time is the GPU time between the events recorded before and after its line of the generated step
(``CupyBackend(profile=True)``), the median over ``--steps`` profiled steps after ``--warmup`` steps. The events
cost a little, so the sum is somewhat above gpu_benchmark.py's step time. Printed: the time by launch kind (GEMM,
row kernel, generated elementwise or reduction kernel, library call) and by category (cupy_plan_model.py's:
attention scores, logits, other), then the slowest ops, each beside the memory traffic and GEMM work the plan
model charges it and the rates those make.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "examples"), os.path.join(ROOT, "benchmarks")]

from cupy_plan_model import category, gemm_flops, moved  # noqa: E402
from gpu_benchmark import GPT2_SMALL, gpt_batch  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=GPT2_SMALL["layers"])
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (each op's median is printed)")
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first (compiles, kernel builds)")
    parser.add_argument("--top", type=int, default=25, help="how many of the slowest ops to list")
    args = parser.parse_args(argv)
    args.vocab, args.context, args.heads, args.batch, args.d_model = (GPT2_SMALL[k] for k in ("vocab", "context", "heads", "batch", "d_model"))
    return args


def profiled_step(cupy: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """The GPT step compiled as a profiling build (``KILN_CUPY_PROFILE=1`` while it compiles), and its device batch."""
    import kiln
    from gpt_tiny import GPT
    from kiln.runtime.data import lm_loss

    kiln.manual_seed(0)
    model = GPT(args.vocab, args.context, args.d_model, args.heads, args.layers)
    optimizer = kiln.optim.AdamW(model.parameters(), lr=GPT2_SMALL["lr"], weight_decay=GPT2_SMALL["weight_decay"])
    batch = tuple(cupy.asarray(a) for a in gpt_batch({**GPT2_SMALL, "layers": args.layers}))
    previous = os.environ.get("KILN_CUPY_PROFILE")
    os.environ["KILN_CUPY_PROFILE"] = "1"
    try:
        step = kiln.compile_train_step(model, lm_loss, optimizer, backend="cupy")
        step(*batch)  # compiles here
    finally:
        if previous is None:
            del os.environ["KILN_CUPY_PROFILE"]
        else:
            os.environ["KILN_CUPY_PROFILE"] = previous
    return step, batch


def op_medians(step: Any, batch: tuple, args: argparse.Namespace) -> tuple[Any, dict[int, float]]:
    """The profiled executable and each op's median GPU milliseconds over ``args.steps`` steps."""
    for _ in range(args.warmup):
        float(step(*batch))
    executable = list(step.compiled.values())[-1].executable
    samples: dict[int, list[float]] = collections.defaultdict(list)
    for _ in range(args.steps):
        float(step(*batch))
        for timed in executable.op_times():
            samples[timed.index].append(timed.ms)
    return executable, {index: statistics.median(values) for index, values in samples.items()}


def report(graph: Any, medians: dict[int, float], args: argparse.Namespace) -> list[str]:
    """The tables: time by launch kind, by category, and the ``args.top`` slowest ops."""
    from kiln.backends.cupy.plan import op_launches

    rows = []
    for index, op in enumerate(graph.ops):
        launches = op_launches(op)
        kind = launches[0].kind if launches else "view"
        rows.append((medians[index], op, kind, category(op, args), moved(op, launches, args.batch) / 1e9, gemm_flops(op, args.batch) / 1e12))
    total = sum(row[0] for row in rows)
    lines = [f"kiln-cupy GPT step, {args.layers} layers, batch {args.batch}: {total:.2f} ms of GPU time between events, {len(rows)} ops"]
    for column, title in ((2, "launch kind"), (3, "category")):
        lines += ["", f"{title:<18} {'ms':>9} {'share':>7} {'GB':>8} {'GB/s':>8} {'TFLOP/s':>8}"]
        for name, group in sorted(_grouped(rows, column).items(), key=lambda item: -sum(r[0] for r in item[1])):
            lines.append(_rate_line(name, group, total))
    lines += ["", f"slowest {args.top} ops", f"{'ms':>8} {'GB':>7} {'GB/s':>7} {'TFLOP/s':>8}  op"]
    for ms, op, kind, _, gb, tflop in sorted(rows, key=lambda row: -row[0])[:args.top]:
        shapes = ", ".join(str(v.type) for v in op.operands[:3]) + (" ..." if len(op.operands) > 3 else "")
        rate, flops = (f"{gb / ms * 1e3:7.0f}" if ms else f"{'':>7}"), (f"{tflop / ms * 1e3:8.1f}" if ms and tflop else f"{'':>8}")
        lines.append(f"{ms:8.3f} {gb:7.2f} {rate} {flops}  {op.name} [{kind}] ({shapes})")
    return lines


def _grouped(rows: list[tuple], column: int) -> dict[str, list[tuple]]:
    groups: dict[str, list[tuple]] = collections.defaultdict(list)
    for row in rows:
        groups[row[column]].append(row)
    return groups


def _rate_line(name: str, group: list[tuple], total: float) -> str:
    ms, gb, tflop = (sum(row[i] for row in group) for i in (0, 4, 5))
    rate, flops = (f"{gb / ms * 1e3:8.0f}" if ms else f"{'':>8}"), (f"{tflop / ms * 1e3:8.1f}" if ms and tflop else f"{'':>8}")
    return f"{name:<18} {ms:9.2f} {ms / total:7.1%} {gb:8.2f} {rate} {flops}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from kiln.backends.cupy import device_problem

    problem = device_problem()
    if problem is not None:
        print(f"gpu_profile needs CuPy and an NVIDIA GPU: {problem}", file=sys.stderr)
        return 2
    import cupy

    step, batch = profiled_step(cupy, args)
    executable, medians = op_medians(step, batch, args)
    print("\n".join(report(executable.graph, medians, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
