"""kiln.linspace (torch 2.13's CPU values to the bit: one fused multiply-add per value, emulated by error-free
transforms, frontend/fused_steps.py) against torch.linspace and np.linspace (two roundings), in one run.

    python benchmarks/linspace_bits.py                     # 1 thread, CPU time of this process
    python benchmarks/linspace_bits.py --clock wall --rounds 9

OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS are set to ``--threads`` (default 1) before NumPy and torch
load, and torch.set_num_threads too. Rows: float64 and float32, 100, 10^4 and 10^6 steps. Columns: microseconds per
call (best of ``--rounds`` rounds of the mean over a round's calls) of ``kiln.linspace`` (the tensor), its values
alone (``torch_linspace``, the NumPy array), ``torch.linspace`` and ``np.linspace``, then kiln over torch and over
NumPy. ``--clock cpu`` (the default) counts this process's CPU time, steadier than wall time on shared cores.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable

LENGTHS = (100, 10_000, 1_000_000)
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    return parser.parse_args()


def calls_per_round(steps: int) -> int:
    """About 10^6 values a round, at least 3 calls."""
    return max(3, 1_000_000 // steps // 10)


def best_microseconds(call: Callable[[], Any], steps: int, rounds: int, clock: Callable[[], float]) -> float:
    call()  # warm
    calls, best = calls_per_round(steps), float("inf")
    for _ in range(rounds):
        start = clock()
        for _ in range(calls):
            call()
        best = min(best, (clock() - start) / calls * 1e6)
    return best


def main() -> None:
    args = parse_args()
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    import numpy as np
    import torch

    import kiln
    from kiln.frontend.linspace_values import torch_linspace

    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    print(f"{args.threads} thread(s), {args.clock} clock, us per call (best of {args.rounds} rounds), -1.3 to 2.7")
    columns = ("kiln", "values", "torch", "numpy", "kiln/torch", "kiln/numpy")
    print(f"{'dtype':8s} {'steps':>8s} " + " ".join(f"{column:>10s}" for column in columns))
    for dtype in ("float64", "float32"):
        for steps in LENGTHS:
            candidates = {
                "kiln": lambda: kiln.linspace(-1.3, 2.7, steps, dtype=getattr(kiln, dtype)),
                "values": lambda: torch_linspace(-1.3, 2.7, steps, np.dtype(dtype)),
                "torch": lambda: torch.linspace(-1.3, 2.7, steps, dtype=getattr(torch, dtype)),
                "numpy": lambda: np.linspace(-1.3, 2.7, steps, dtype=dtype),
            }
            times = {name: best_microseconds(call, steps, args.rounds, clock) for name, call in candidates.items()}
            row = " ".join(f"{times[name]:10.1f}" for name in candidates)
            ratios = f"{times['kiln'] / times['torch']:10.1f} {times['kiln'] / times['numpy']:10.1f}"
            print(f"{dtype:8s} {steps:8d} {row} {ratios}")


if __name__ == "__main__":
    main()
