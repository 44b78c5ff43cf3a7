"""Does chunking the batch of ``F.linear_cross_entropy`` (PyTorch's ``LinearCrossEntropyOptions``) pay in kiln's
memory plan? The NumPy backend's planned peak of a training step and its median time, whole and chunked, in one run.

    python benchmarks/linear_cross_entropy_memory.py                          # N=1024, in=128, C=16384; chunks 256, 64
    python benchmarks/linear_cross_entropy_memory.py --rows 512 --classes 32000 --chunks 64,128

A vocabulary head (``in_features -> classes``, with bias) and its loss over a static batch after a one-layer trunk,
trained by SGD with ``kiln.compile_train_step``. "whole" is ``nn.LinearCrossEntropyLoss`` (the reference: the
``(N, C)`` logits in the graph); a chunk size is the chunked form PyTorch's option selects, built in the graph: each
chunk of rows projected and scored inside ``kiln.utils.checkpoint`` (logits recomputed in the backward), the sums
added and divided by the count. Printed: the memory plan's peak and pooled MiB (``plan_memory.bytes_summary``, as
``checkpoint_memory.py``), the full logits' size for scale, and ms per step. Thread pools are pinned before NumPy loads.

Measured (1 thread, N=1024, in=128, C=16384; full logits 64 MiB): whole peak 73.0 MiB, 805 ms; chunks of 256:
97.5 MiB, 1186 ms; chunks of 64: 193.5 MiB, 1351 ms. The peak rises with the number of chunks: each chunk's backward makes a (C, in) weight
gradient (8 MiB here), and the autodiff pass sums a fan-out's gradients once all exist, so they are live together;
PyTorch's chunked op accumulates them in place. So ``frontend/linear_cross_entropy.py`` does not chunk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--classes", type=int, default=16384)
    parser.add_argument("--chunks", default="256,64", help="comma-separated chunk sizes")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def HeadModel(nn, features: int, classes: int, chunk: int | None):
    """A one-layer trunk (``Linear(features, features)``) whose ``head`` is the loss: the step's loss function calls
    ``score`` (the whole loss, or in checkpointed chunks of ``chunk`` rows)."""

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Linear(features, features)
            self.head = nn.LinearCrossEntropyLoss(features, classes, bias=True)

        def forward(self, x):
            return self.trunk(x).tanh()

        def score(self, hidden, target):
            return self.head(hidden, target) if chunk is None else chunked_loss(self.head, hidden, target, chunk)

    return Model()


def chunked_loss(head, hidden, target, chunk: int):
    """The mean cross-entropy over checkpointed chunks of ``chunk`` rows (no ignored targets here)."""
    import kiln.nn.functional as F
    from kiln.utils.checkpoint import checkpoint

    rows = hidden.shape[0]
    total = None
    for start in range(0, rows, chunk):
        size = min(chunk, rows - start)
        piece = checkpoint(lambda h, t: F.cross_entropy(F.linear(h, head.linear.weight, head.linear.bias), t, reduction="sum"),
                           hidden.narrow(0, start, size), target.narrow(0, start, size), use_reentrant=False)
        total = piece if total is None else total + piece
    return total / rows


def planned_step(rows: int, features: int, classes: int, chunk: int | None):
    """The compiled step after its first call, and the memory plan's bytes."""
    import numpy as np

    import kiln
    import kiln.nn as nn
    from kiln.compiler.passes.plan_memory import bytes_summary

    kiln.manual_seed(0)  # every variant starts from the same weights
    model = HeadModel(nn, features, classes, chunk)
    step = kiln.compile_train_step(model, model.score, kiln.optim.SGD(model.parameters(), lr=0.1),
                                   batch_dim=None)  # a static batch: the chunks are counted at trace time
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((rows, features)).astype(np.float32), rng.integers(0, classes, rows)
    step(x, y)
    executable = list(step.compiled.values())[-1].executable
    return (lambda: step(x, y)), bytes_summary(executable.graph.memory_plan, {})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    logits = args.rows * args.classes * 4 / 2**20
    print(f"N={args.rows} in={args.features} C={args.classes}: full logits {logits:.1f} MiB (float32)")
    print("chunk | peak MiB | pooled MiB | ms/step")
    for label, chunk in [("whole", None)] + [(text, int(text)) for text in args.chunks.split(",")]:
        run, memory = planned_step(args.rows, args.features, args.classes, chunk)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        print(f"{label:>5} | {memory['peak'] / 2**20:8.1f} | {memory['pooled'] / 2**20:10.1f} | {statistics.median(times) * 1e3:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
