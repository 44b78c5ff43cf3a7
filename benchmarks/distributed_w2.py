"""W2 (MLP 784-128-64-10, global batch 1024, SGD) data-parallel step time on 1 and 2 MPI ranks, and allreduce time per step.

    python benchmarks/distributed_w2.py              # launches mpiexec -n 1 and -n 2 itself, prints one table
    python benchmarks/distributed_w2.py --steps 200

Each rank runs its 1024 / ranks rows of every batch; one step is forward,
backward, the bucketed gradient allreduce and the update. The plain
single-process ``compile_train_step`` (no comm ops) is the baseline row; the
last row runs two independent half-batch steps at once without any comm, the
most 2 ranks can gain on this machine. The allreduce time includes waiting
for the slower rank.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES, BATCH = (784, 128, 64, 10), 1024


def worker(steps: int, warmup: int, plain: bool) -> None:
    import kiln
    import kiln.distributed as dist
    import kiln.nn as nn
    import kiln.nn.functional as F

    comm = dist.init()
    timed = TimedComm(comm)
    dist.use(timed)
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.01))
    step = dist.DataParallel(step) if comm.size > 1 and not plain else step
    rows = BATCH // comm.size
    rng = np.random.default_rng(comm.rank)
    x, y = rng.standard_normal((rows, SIZES[0])).astype(np.float32), rng.integers(0, 10, rows)
    for _ in range(warmup):
        step(x, y)
    comm.barrier()
    timed.seconds, start = 0.0, time.perf_counter()
    for _ in range(steps):
        step(x, y)
    comm.barrier()
    elapsed = time.perf_counter() - start
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "plain": plain, "step_ms": 1e3 * elapsed / steps, "allreduce_ms": 1e3 * timed.seconds / steps}), flush=True)


class TimedComm:
    """Passes every call to the communicator; adds up the time spent in ``allreduce``."""

    def __init__(self, comm):
        self.comm, self.seconds = comm, 0.0

    def allreduce(self, x, op):
        start = time.perf_counter()
        result = self.comm.allreduce(x, op)
        self.seconds += time.perf_counter() - start
        return result

    def __getattr__(self, name):
        return getattr(self.comm, name)


def launch(ranks: int, steps: int, warmup: int, plain: bool = False) -> dict:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec") or "mpiexec", "-n", str(ranks), sys.executable, "-m", "mpi4py",
               __file__, "--worker", "--steps", str(steps), "--warmup", str(warmup)] + (["--plain"] if plain else [])
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    output = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.warmup, args.plain)
    results = [launch(1, args.steps, args.warmup), launch(2, args.steps, args.warmup), launch(2, args.steps, args.warmup, plain=True)]
    base = results[0]["step_ms"]
    print(f"W2: MLP 784-128-64-10, global batch {BATCH}, SGD, {args.steps} steps, {os.cpu_count()} CPUs, 1 BLAS thread per rank")
    print(f"{'ranks':>5} {'rows/rank':>10} {'step ms':>9} {'allreduce ms':>13} {'speedup':>8}")
    for row in results:
        label = f"{row['ranks']:>5}" + (" (no comm: two independent half-batch steps at once, the machine's limit)" if row["plain"] else "")
        print(f"{row['ranks']:>5} {BATCH // row['ranks']:>10} {row['step_ms']:>9.2f} {row['allreduce_ms']:>13.3f} {base / row['step_ms']:>7.2f}x"
              + label[5:])


if __name__ == "__main__":
    main()
