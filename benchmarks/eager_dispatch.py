"""Eager per-op cost: kiln's eager dispatch against PyTorch eager and plain NumPy, op by op, in one run.

    python benchmarks/eager_dispatch.py                 # 1 thread, 16x16 float32 operands
    python benchmarks/eager_dispatch.py --calls 2000 --rounds 9 --size 64
    python benchmarks/eager_dispatch.py --clock cpu     # this thread's CPU time: steadier on a shared machine

Each row is one call on small operands, where the time is the framework's
own overhead, not arithmetic: kiln eager (``frontend/op_dispatch.py`` ``apply``
into ``runtime/eager.py``: the op is built and its cached one-op function
run), PyTorch eager (CPU tensors without ``requires_grad``) and the NumPy
expression it computes (the floor: one NumPy call). The last row is the
forward of a 64-128-64-10 MLP on a batch of 128 (``nn.Sequential`` of
``Linear`` and ``ReLU``; parameters require gradients in both frameworks, so
both record their autograd graph). Times are the median, over ``--rounds``
alternating rounds, of the mean of ``--calls`` calls (µs per call), by the
wall clock or (``--clock cpu``) by this thread's CPU time, which other
processes on a busy machine do not inflate; every candidate runs in this
thread (one BLAS and one torch thread). Ratios are kiln's time over torch's
and over NumPy's. Thread pools are pinned before NumPy loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=1000, help="calls timed together (one round of one candidate)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=16, help="operands are size x size")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: this thread's CPU time")
    return parser.parse_args(argv)


Candidates = dict[str, Callable[[], Any]]


def op_rows(size: int) -> dict[str, Candidates]:
    """Per op: the same call in kiln eager, torch eager and NumPy, on the same float32 values."""
    import numpy as np
    import torch

    import kiln
    import kiln.nn.functional as F

    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    w, bias = rng.random((size, size), dtype=np.float32), rng.random(size, dtype=np.float32)
    ka, kb, kw, kbias = (kiln.tensor(array) for array in (a, b, w, bias))
    ta, tb, tw, tbias = (torch.from_numpy(array) for array in (a, b, w, bias))

    def np_softmax(x: Any) -> Any:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return {
        "a + b": {"kiln": lambda: ka + kb, "torch": lambda: ta + tb, "numpy": lambda: a + b},
        "a * 2.0": {"kiln": lambda: ka * 2.0, "torch": lambda: ta * 2.0, "numpy": lambda: a * np.float32(2.0)},
        "a.relu()": {"kiln": lambda: ka.relu(), "torch": lambda: ta.relu(), "numpy": lambda: np.maximum(a, 0)},
        "a.sum(1)": {"kiln": lambda: ka.sum(1), "torch": lambda: ta.sum(1), "numpy": lambda: a.sum(1)},
        "a.reshape(-1)": {"kiln": lambda: ka.reshape(-1), "torch": lambda: ta.reshape(-1), "numpy": lambda: a.reshape(-1)},
        "a.softmax(1)": {"kiln": lambda: ka.softmax(1), "torch": lambda: ta.softmax(1), "numpy": lambda: np_softmax(a)},
        "F.linear(a, w, bias)": {"kiln": lambda: F.linear(ka, kw, kbias), "torch": lambda: torch.nn.functional.linear(ta, tw, tbias),
                                 "numpy": lambda: a @ w.T + bias},
    }


def mlp_row() -> Candidates:
    """The forward of the eager_loop MLP, from the same weights."""
    import numpy as np
    import torch

    import kiln
    import kiln.nn as nn

    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    state = {name: np.array(value) for name, value in model.state_dict().items()}
    net.load_state_dict({name: torch.from_numpy(value) for name, value in state.items()})
    x = np.random.default_rng(0).random((128, 64), dtype=np.float32)
    kx, tx = kiln.tensor(x), torch.from_numpy(x)
    weights = [(state[f"{i}.weight"], state[f"{i}.bias"]) for i in (0, 2, 4)]

    def numpy_forward() -> Any:
        h = x
        for index, (weight, bias) in enumerate(weights):
            h = h @ weight.T + bias
            h = np.maximum(h, 0) if index < 2 else h
        return h

    return {"kiln": lambda: model(kx), "torch": lambda: net(tx), "numpy": numpy_forward}


def interleaved_microseconds(candidates: Candidates, calls: int, rounds: int, clock: Callable[[], float]) -> dict[str, float]:
    """Median over rounds of the mean µs per call; each round times every candidate once, so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for call in candidates.values():
        for _ in range(max(1, calls // 10)):
            call()  # warm up: kiln compiles each op's function on first sight
    for _ in range(rounds):
        for name, call in candidates.items():
            start = clock()
            for _ in range(calls):
                call()
            times[name].append((clock() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def report(name: str, micros: dict[str, float]) -> str:
    kiln_us, torch_us, numpy_us = micros["kiln"], micros["torch"], micros["numpy"]
    return f"{name:<22} | {kiln_us:9.2f} | {torch_us:9.2f} | {numpy_us:9.2f} | {kiln_us / torch_us:6.2f}x | {kiln_us / numpy_us:6.2f}x"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    print(f"eager per-op cost, {args.threads} thread(s), {args.size}x{args.size} float32; "
          f"median of {args.rounds} rounds of {args.calls} calls ({args.clock} µs per call)")
    print("op                     |   kiln µs |  torch µs |  numpy µs | /torch  | /numpy")
    print("---------------------- | --------: | --------: | --------: | ------: | ------:")
    rows = dict(op_rows(args.size), **{"MLP forward, batch 128": mlp_row()})
    for name, candidates in rows.items():
        calls = args.calls if name != "MLP forward, batch 128" else max(1, args.calls // 10)
        print(report(name, interleaved_microseconds(candidates, calls, args.rounds, clock)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
