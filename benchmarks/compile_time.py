"""Compile time of large graphs: the training steps W1-W6 of ``train_step.py`` and an unrolled LSTMCell chain.

    python benchmarks/compile_time.py                       # W1-W6 and the chain at 50, 100, 200 steps
    python benchmarks/compile_time.py --quick               # W1 and a 3-step chain (the smoke test)
    python benchmarks/compile_time.py --workloads W6 --chain 50 --passes   # also seconds per pass
    python benchmarks/compile_time.py --dump out/           # also the IR after the passes and the generated source

Each row is a first compile (the code cache cleared, the garbage collector paused as ``TrainStep.compile``
does): trace (the step graph: forward, autodiff, optimizer), the graph passes (``DEFAULT_PIPELINE``) and the
NumPy backend (lowering, fusion, memory plan, code generation), with the op counts of the step graph after the
passes and of the backend's lowered graph. The chain is ``h, c = cell(x[:, t], (h, c)); total += head(h)``
for ``t < steps``, the loss the MSE of ``total`` (LSTMCell 8 -> 16, Linear 16 -> 2, SGD), so its graph grows linearly with ``steps``: its
seconds per op show whether compile time does too. ``--dump`` writes ``<row>.ir`` and ``<row>.py`` per row,
to check that a compiler change leaves what is produced unchanged (``diff -r before/ after/``). Thread
pools are pinned to one thread before NumPy loads.
"""

from __future__ import annotations

import argparse
import os
import sys


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6", help="train_step.py workloads ('' for none)")
    parser.add_argument("--chain", default="50,100,200", help="LSTMCell chain lengths ('' for none)")
    parser.add_argument("--quick", action="store_true", help="W1 and a 3-step chain only")
    parser.add_argument("--passes", action="store_true", help="also print the seconds of each pass per row")
    parser.add_argument("--dump", default="", help="a folder: write each row's IR after the passes and generated source")
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = _arguments()
    for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_name] = "1"

import time  # noqa: E402  (after pinning the thread pools)
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Row:
    name: str
    ops: int
    lowered_ops: int
    seconds: dict[str, float]
    """``trace``, ``passes``, ``backend``, ``total`` (wall clock) and ``cpu`` (the process's CPU time, which a busy
    machine disturbs less)."""
    pass_seconds: list[tuple[str, float]] = field(default_factory=list)
    ir: str = ""
    source: str = ""


def compile_row(name: str, model: Any, step: Any, arrays: tuple[np.ndarray, ...]) -> Row:
    """Compile ``step`` (a not yet traced ``kiln.compile_train_step``) for ``arrays`` and time its phases."""
    from kiln.backends import get_backend
    from kiln.backends.numpy import codegen
    from kiln.compiler.ir.printer import print_graph
    from kiln.compiler.passes.manager import PassManager
    from kiln.runtime.donation import step_donations
    from kiln.runtime.step_graph import build_step_graph
    from kiln.runtime.train_step import batch_specs, collection_paused

    codegen._CODE_CACHE.clear()
    specs = batch_specs(arrays)
    with collection_paused():
        start, cpu = time.perf_counter(), time.process_time()
        step_graph = build_step_graph(model, step.loss_fn, step.optimizer, specs, step.options)
        traced = time.perf_counter()
        manager = PassManager(step.pipeline)
        manager.run(step_graph.graph)
        step_graph.graph.donations = step_donations(step_graph, len(specs))
        passed = time.perf_counter()
        executable = get_backend("numpy").compile(step_graph.graph)
        done, cpu = time.perf_counter(), time.process_time() - cpu
    seconds = {"trace": traced - start, "passes": passed - traced, "backend": done - passed, "total": done - start, "cpu": cpu}
    return Row(name, len(step_graph.graph.ops), len(executable.graph.ops), seconds,
               [(pass_name, s) for pass_name, s, _ in manager.timings], print_graph(step_graph.graph), executable.source)


def mlp_step(name: str) -> tuple[Any, Any, tuple[np.ndarray, ...]]:
    """W1 (SGD, batch 128), W2 (SGD, batch 1024) or W3 (Adam, batch 128): the MLP 784-128-64-10 of train_step.py."""
    import kiln
    import kiln.nn as nn
    import kiln.nn.functional as F

    kiln.manual_seed(0)
    batch = 1024 if name == "W2" else 128
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = kiln.optim.Adam(model.parameters(), lr=1e-3) if name == "W3" else kiln.optim.SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    arrays = (rng.random((batch, 784), dtype=np.float32), rng.integers(0, 10, batch))
    return model, kiln.compile_train_step(model, F.cross_entropy, optimizer), arrays


def model_step(name: str) -> tuple[Any, Any, tuple[np.ndarray, ...]]:
    """W4 (GPT), W5 (CNN) or W6 (LSTM LM), built as ``train_step.py`` builds them."""
    if name == "W4":
        from gpt_workload import GPTConfig, gpt_batch, kiln_gpt

        config = GPTConfig()
        return (*kiln_gpt(config), gpt_batch(config))
    if name == "W5":
        from cnn_workload import CNNConfig, cnn_batch, kiln_cnn

        config = CNNConfig(batch=256, lr=0.05)
        return (*kiln_cnn(config), cnn_batch(config))
    from lstm_workload import LSTMConfig, kiln_lstm, lstm_batch

    config = LSTMConfig()
    return (*kiln_lstm(config), lstm_batch(config))


def chain_step(steps: int) -> tuple[Any, Any, tuple[np.ndarray, ...]]:
    """An LSTMCell unrolled ``steps`` times, a linear head summed over every step, SGD."""
    import kiln
    import kiln.nn as nn
    import kiln.nn.functional as F

    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell, self.head = nn.LSTMCell(8, 16), nn.Linear(16, 2)

        def forward(self, x: Any) -> Any:
            h, c = self.cell(x[:, 0])
            total = self.head(h)
            for t in range(1, steps):
                h, c = self.cell(x[:, t], (h, c))
                total = total + self.head(h)
            return total

    kiln.manual_seed(0)
    model = Chain()
    rng = np.random.default_rng(0)
    arrays = (rng.random((1, steps, 8), dtype=np.float32), rng.random((1, 2), dtype=np.float32))
    return model, kiln.compile_train_step(model, F.mse_loss, kiln.optim.SGD(model.parameters(), lr=0.01)), arrays


def rows_to_run(args: argparse.Namespace) -> list[tuple[str, Callable[[], tuple[Any, Any, tuple[np.ndarray, ...]]]]]:
    workloads = ["W1"] if args.quick else [w for w in args.workloads.split(",") if w]
    chains = [3] if args.quick else [int(n) for n in args.chain.split(",") if n]
    unknown = [w for w in workloads if w not in ("W1", "W2", "W3", "W4", "W5", "W6")]
    if unknown:
        raise SystemExit(f"compile_time.py: unknown workload {', '.join(unknown)}; choose from W1..W6")
    rows: list[tuple[str, Callable[[], Any]]] = []
    for name in workloads:
        rows.append((name, (lambda n=name: mlp_step(n)) if name in ("W1", "W2", "W3") else (lambda n=name: model_step(n))))
    for steps in chains:
        rows.append((f"chain{steps}", lambda s=steps: chain_step(s)))
    return rows


def table(rows: list[Row]) -> str:
    lines = [f"{'graph':<10}{'ops':>8}{'lowered':>9}{'trace s':>9}{'passes s':>10}{'backend s':>11}{'total s':>9}{'cpu s':>8}{'cpu us/op':>10}"]
    for row in rows:
        s = row.seconds
        lines.append(f"{row.name:<10}{row.ops:>8}{row.lowered_ops:>9}{s['trace']:>9.3f}{s['passes']:>10.3f}"
                     f"{s['backend']:>11.3f}{s['total']:>9.3f}{s['cpu']:>8.3f}{1e6 * s['cpu'] / max(row.ops, 1):>10.1f}")
    return "\n".join(lines)


def pass_table(row: Row) -> str:
    return f"{row.name}: " + ", ".join(f"{name} {seconds:.3f}" for name, seconds in row.pass_seconds)


def dump(row: Row, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for suffix, text in ((".ir", row.ir), (".py", row.source)):
        with open(os.path.join(folder, row.name + suffix), "w") as file:
            file.write(text)


def main(args: argparse.Namespace) -> list[Row]:
    rows = []
    for name, build in rows_to_run(args):
        rows.append(compile_row(name, *build()))
        if args.dump:
            dump(rows[-1], args.dump)
    print(f"compile time, one thread (OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}), first compiles")
    print(table(rows))
    if args.passes:
        print("\n".join(pass_table(row) for row in rows))
    return rows


if __name__ == "__main__":
    main(ARGS)
