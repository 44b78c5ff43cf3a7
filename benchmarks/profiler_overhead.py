"""What kiln.profiler's hooks cost when no profiler runs, and what profiling costs when one does.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/profiler_overhead.py

Times, in microseconds per call (the least and the median of ``--repeats`` runs of ``--calls`` calls each):
a compiled training step of a small MLP (``kiln.compile_train_step``, batch 32, 64 -> 128 -> 10: small on purpose,
so a per-call check would show), one eager op (``x + y`` on 32x64) and, with ``--profiled``, the same under
``kiln.profiler.profile()``. Run it before and after a change to the hooks; the numbers are noisy at the 1-3% level
on a shared machine, so compare medians of a few runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--profiled", action="store_true", help="also time the calls under kiln.profiler.profile()")
    return parser.parse_args()


def best_and_median_us(call, calls: int, repeats: int) -> tuple[float, float]:
    """The least and the median over ``repeats`` of the mean microseconds per call of ``calls`` calls."""
    for _ in range(50):
        call()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        runs.append(1e6 * (time.perf_counter() - start) / calls)
    return min(runs), statistics.median(runs)


def workloads():
    import kiln
    import kiln.nn as nn
    import kiln.nn.functional as F

    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.01))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 64)).astype(np.float32), rng.integers(0, 10, 32)
    a, b = kiln.randn(32, 64), kiln.randn(32, 64)
    return {"compiled train step": lambda: step(x, y), "eager x + y": lambda: a + b}


def main() -> None:
    args = parse_args()
    for name, call in workloads().items():
        line = f"{name:>22}: best %8.2f us, median %8.2f us" % best_and_median_us(call, args.calls, args.repeats)
        if args.profiled:
            import kiln.profiler

            with kiln.profiler.profile():
                line += "   profiled: best %8.2f us, median %8.2f us" % best_and_median_us(call, args.calls // 10, args.repeats)
        print(line)


if __name__ == "__main__":
    main()
