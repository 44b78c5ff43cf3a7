"""Where kiln-numpy's training step spends its time: the wall time of every op of a profiling build.

    python benchmarks/cpu_profile.py                 # W5, the CNN of train_step.py
    python benchmarks/cpu_profile.py --workload W4 --top 30     # or W6, the LSTM

The step is compiled with ``KILN_NUMPY_PROFILE=1``: the generated code reads a clock after every op of the lowered
graph (a fused group is one op) and ``Executable.op_times()`` returns the last call's times. Each op's median over
``--steps`` steps is printed, summed by kind (the op's name; a fused group's is its first ops), then the slowest
ops. The clock reads cost about a microsecond per op, so the sum is a little above train_step.py's step time.
Where the code generator folds ops into one statement, the time lands on the last of them: a weight gradient's
batched matmul summed over the batch is one GEMM, timed at its ``tensor.reduce_sum``.
Thread pools are pinned to ``--threads`` before NumPy loads.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("W4", "W5", "W6"), default="W5")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    return parser.parse_args(argv)


def profiled_step(workload: str):
    """The workload's step, compiled as a profiling build, and its executable (after the compiling first call)."""
    os.environ["KILN_NUMPY_PROFILE"] = "1"
    try:
        if workload == "W4":
            from gpt_workload import GPTConfig, kiln_gpt_step

            run, _, step = kiln_gpt_step(GPTConfig())
        elif workload == "W6":
            from lstm_workload import LSTMConfig, kiln_lstm_step

            run, _, step = kiln_lstm_step(LSTMConfig())
        else:
            from cnn_workload import CNNConfig, kiln_cnn_step

            run, _, step = kiln_cnn_step(CNNConfig())
    finally:
        del os.environ["KILN_NUMPY_PROFILE"]
    (compiled,) = step.compiled.values()
    return run, compiled.executable


def kind(op) -> str:
    ops = op.attrs.get("ops")
    return f"{op.name}({', '.join(ops[:3])}{', ...' if len(ops) > 3 else ''})" if ops else op.name


def median_times(run, executable, steps: int, warmup: int) -> list[tuple[float, int, str]]:
    for _ in range(warmup):
        run()
    samples = collections.defaultdict(list)
    for _ in range(steps):
        run()
        for t in executable.op_times():
            samples[t.index].append(t.ms)
    ops = executable.graph.ops
    return [(statistics.median(samples[i]), i, kind(ops[i])) for i in range(len(ops))]


def report(times: list[tuple[float, int, str]], top: int) -> list[str]:
    total = sum(ms for ms, _, _ in times)
    by_kind: dict[str, list[float]] = collections.defaultdict(list)
    for ms, _, name in times:
        by_kind[name].append(ms)
    lines = [f"step: {total:.2f} ms in {len(times)} ops (sum of per-op medians)", "", f"{'ms':>8} {'share':>6} {'ops':>4}  kind"]
    for name, values in sorted(by_kind.items(), key=lambda item: -sum(item[1]))[:top]:
        lines.append(f"{sum(values):8.3f} {sum(values) / total:6.1%} {len(values):4d}  {name}")
    lines += ["", f"{'ms':>8} {'op':>4}  slowest ops"]
    lines += [f"{ms:8.3f} {index:4d}  {name}" for ms, index, name in sorted(times, reverse=True)[:top]]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]
    run, executable = profiled_step(args.workload)
    print(f"{args.workload}, {args.threads} thread(s), median of {args.steps} profiled steps")
    print("\n".join(report(median_times(run, executable, args.steps, args.warmup), args.top)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
