"""kiln on CuPy against PyTorch on the same GPU: W1 (MLP 784-128-64-10, SGD) at batch 128 and 4096, a
GPT-2-small-shaped step (12 layers, d_model 768, 12 heads, context 1024, batch 8, AdamW), and W1 in float16 at batch
4096 (kiln's ``model.half()`` against torch's ``model.half()`` and torch's float32 model under ``torch.autocast``), in
one run.

    python benchmarks/gpu_benchmark.py                        # all workloads, prints one table
    python benchmarks/gpu_benchmark.py --workloads w1-128 --steps 50 --budget-s 60
    python benchmarks/gpu_benchmark.py --workloads gpt2-small --implementations kiln-cupy,kiln-cupy-whole,torch-eager
                                                              # what chunked causal attention buys

Each row is timed with CUDA events around ``--steps`` steps after ``--warmup`` steps (compilation and kernel
builds happen in the warm-up), so it measures what the GPU timeline sees, host gaps included. Batches live on
the device for every implementation. Rows that would not fit the time budget (``--budget-s``, counted from the
start) are skipped and say so; a row that fails prints its error and the run goes on (exit status 1 at the end).
torch.compile rows run only when torch.compile works here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "examples"), os.path.join(ROOT, "benchmarks")]

WORKLOADS = ("w1-128", "w1-4096", "gpt2-small", "w1-4096-f16")
IMPLEMENTATIONS = ("kiln-cupy", "torch-eager", "torch-compile", "torch-autocast")
HALF_IMPLEMENTATIONS = ("kiln-cupy", "torch-eager", "torch-autocast")
"""What a float16 workload (``-f16``) runs: kiln and torch with float16 parameters, torch's autocast (float32 parameters,
float16 matmuls); torch-autocast runs for float16 workloads only."""
EXTRA_IMPLEMENTATIONS = ("kiln-cupy-whole",)
"""Asked for by name only (outside the 5-minute default): kiln-cupy with causal attention unchunked (``CAUSAL_CHUNK = 0``),
to measure what ``chunk-causal-attention`` buys."""
GPT2_SMALL = {"vocab": 50257, "context": 1024, "d_model": 768, "heads": 12, "layers": 12, "batch": 8, "lr": 3e-4, "weight_decay": 0.1}


class BenchmarkError(RuntimeError):
    """The benchmark cannot run here (no GPU, a missing package); the message says what to do."""


@dataclass
class Row:
    workload: str
    implementation: str
    ms_per_step: float | None = None
    note: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, from {', '.join(WORKLOADS)}")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS),
                        help=f"comma-separated, from {', '.join(IMPLEMENTATIONS + EXTRA_IMPLEMENTATIONS)}")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per W1 row")
    parser.add_argument("--gpt-steps", type=int, default=5, help="timed steps per GPT row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compiles)")
    parser.add_argument("--gpt-layers", type=int, default=GPT2_SMALL["layers"], help="fewer layers for a quicker GPT row")
    parser.add_argument("--budget-s", type=float, default=170.0, help="skip rows that would start after this many seconds")
    args = parser.parse_args(argv)
    args.workloads = _choices(args.workloads, WORKLOADS, "--workloads")
    args.implementations = _choices(args.implementations, IMPLEMENTATIONS + EXTRA_IMPLEMENTATIONS, "--implementations")
    return args


def _choices(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    chosen = [item for item in text.split(",") if item]
    unknown = [item for item in chosen if item not in allowed]
    if unknown:
        raise SystemExit(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return chosen


def require_gpu() -> Any:
    """CuPy with a CUDA device, or a ``BenchmarkError`` saying why not."""
    from kiln.backends.cupy import device_problem

    problem = device_problem()
    if problem:
        raise BenchmarkError(f"gpu_benchmark needs CuPy and an NVIDIA GPU: {problem}")
    import cupy

    return cupy


def time_steps(step: Callable[[], Any], steps: int, warmup: int, events: Callable[[], tuple[Any, Any, Callable[[], float]]]) -> float:
    """Milliseconds per step between two CUDA events, after ``warmup`` steps."""
    for _ in range(warmup):
        step()
    start, end, elapsed = events()
    start.record()
    for _ in range(steps):
        step()
    end.record()
    return elapsed() / steps


def cupy_events(cupy: Any) -> Callable[[], tuple[Any, Any, Callable[[], float]]]:
    def make():
        cupy.cuda.Device().synchronize()
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        return start, end, lambda: (end.synchronize(), cupy.cuda.get_elapsed_time(start, end))[1]

    return make


def torch_events(torch: Any) -> Callable[[], tuple[Any, Any, Callable[[], float]]]:
    def make():
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        return start, end, lambda: (end.synchronize(), start.elapsed_time(end))[1]

    return make


# --- W1 ------------------------------------------------------------------------------------------------------


def w1_batch(batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((batch, 784), dtype=np.float32), rng.integers(0, 10, batch)


def kiln_w1(cupy: Any, batch: int, half: bool = False) -> Callable[[], Any]:
    import kiln
    import kiln.nn as nn
    import kiln.nn.functional as F

    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    model = model.half() if half else model
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.01), backend="cupy")
    x, y = w1_batch(batch)
    x, y = cupy.asarray(x.astype(np.float16) if half else x), cupy.asarray(y)
    return lambda: step(x, y)


def torch_w1(torch: Any, batch: int, compiled: bool, half: bool = False, autocast: bool = False) -> Callable[[], Any]:
    """``half``: float16 parameters and batch; ``autocast``: float32 ones, the forward under ``torch.autocast``."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)).cuda()
    model = model.half() if half else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = (torch.from_numpy(a).cuda() for a in w1_batch(batch))
    x = x.half() if half else x
    forward = torch.compile(model) if compiled else model

    def loss_of():
        if not autocast:
            return nn.functional.cross_entropy(forward(x), y)
        with torch.autocast("cuda", dtype=torch.float16):
            return nn.functional.cross_entropy(forward(x), y)

    return _torch_step(torch, loss_of, optimizer)


def _torch_step(torch: Any, loss_of: Callable[[], Any], optimizer: Any) -> Callable[[], Any]:
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        optimizer.step()
        return loss

    return step


# --- GPT-2 small -------------------------------------------------------------------------------------------


def gpt_batch(config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config["vocab"], (config["batch"], config["context"] + 1))
    return tokens[:, :-1].copy(), tokens[:, 1:].copy()


def kiln_gpt(cupy: Any, config: dict[str, Any]) -> Callable[[], Any]:
    import kiln
    from gpt_tiny import GPT
    from kiln.runtime.data import lm_loss

    kiln.manual_seed(0)
    model = GPT(config["vocab"], config["context"], config["d_model"], config["heads"], config["layers"])
    optimizer = kiln.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    step = kiln.compile_train_step(model, lm_loss, optimizer, backend="cupy")
    x, y = (cupy.asarray(a) for a in gpt_batch(config))
    return lambda: step(x, y)


def torch_gpt(torch: Any, config: dict[str, Any], compiled: bool) -> Callable[[], Any]:
    torch.manual_seed(0)
    model = _torch_gpt(torch, config).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    x, y = (torch.from_numpy(a).cuda() for a in gpt_batch(config))
    forward = torch.compile(model) if compiled else model
    loss_of = lambda: torch.nn.functional.cross_entropy(forward(x).reshape(-1, config["vocab"]), y.reshape(-1))  # noqa: E731
    return _torch_step(torch, loss_of, optimizer)


def _torch_gpt(torch: Any, config: dict[str, Any]) -> Any:
    """examples/gpt_tiny.py's GPT in PyTorch: pre-LayerNorm blocks, causal attention, tanh-GELU MLP, untied head."""
    nn, d = torch.nn, config["d_model"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, config["heads"], batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
            self.register_buffer("mask", torch.triu(torch.ones(config["context"], config["context"], dtype=torch.bool), 1), persistent=False)

        def forward(self, x):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, need_weights=False, attn_mask=self.mask, is_causal=True)[0]
            return x + self.mlp(self.ln2(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding = nn.Embedding(config["vocab"], d)
            self.position_embedding = nn.Embedding(config["context"], d)
            self.blocks = nn.Sequential(*[Block() for _ in range(config["layers"])])
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, config["vocab"], bias=False)

        def forward(self, tokens):
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            return self.head(self.norm(self.blocks(self.token_embedding(tokens) + self.position_embedding(positions))))

    return Model()


# --- the run -----------------------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [(w, i) for w in args.workloads for i in IMPLEMENTATIONS + EXTRA_IMPLEMENTATIONS
            if i in args.implementations and (i in HALF_IMPLEMENTATIONS if w.endswith("-f16") else i != "torch-autocast")]


def measure(workload: str, implementation: str, args: argparse.Namespace, cupy: Any) -> float:
    gpt, half = workload == "gpt2-small", workload.endswith("-f16")
    config = {**GPT2_SMALL, "layers": args.gpt_layers}
    steps = args.gpt_steps if gpt else args.steps
    if implementation.startswith("kiln-cupy"):
        from kiln.compiler.passes import chunk_causal_attention

        default = chunk_causal_attention.CAUSAL_CHUNK
        chunk_causal_attention.CAUSAL_CHUNK = 0 if implementation == "kiln-cupy-whole" else default  # read when compiling
        try:
            step = kiln_gpt(cupy, config) if gpt else kiln_w1(cupy, int(workload.split("-")[1]), half)
            return time_steps(step, steps, args.warmup, cupy_events(cupy))
        finally:
            chunk_causal_attention.CAUSAL_CHUNK = default
    import torch

    compiled, autocast = implementation == "torch-compile", implementation == "torch-autocast"
    step = torch_gpt(torch, config, compiled) if gpt else torch_w1(torch, int(workload.split("-")[1]), compiled, half and not autocast, autocast)
    return time_steps(step, steps, args.warmup, torch_events(torch))


def run(args: argparse.Namespace) -> list[Row]:
    cupy = require_gpu()
    started, rows = time.perf_counter(), []
    for workload, implementation in plan(args):
        row = Row(workload, implementation)
        if time.perf_counter() - started > args.budget_s:
            row.note = f"skipped: past the {args.budget_s:.0f} s budget"
        else:
            try:
                row.ms_per_step = measure(workload, implementation, args, cupy)
            except Exception as error:  # one failing row (torch.compile without a compiler) does not end the run
                row.note = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}"
        rows.append(row)
        print(format_row(row, rows), flush=True)
    return rows


def format_row(row: Row, rows: list[Row], gemm_tflop: float | None = None) -> str:
    """One table line: the time, the ratio to torch-eager's (once that row exists) and, given the step's matmul
    work, the achieved matmul TFLOP/s."""
    eager = next((r.ms_per_step for r in rows if r.workload == row.workload and r.implementation == "torch-eager"), None)
    ms = f"{row.ms_per_step:10.3f}" if row.ms_per_step is not None else f"{'-':>10}"
    ratio = f"{row.ms_per_step / eager:8.2f}x" if row.ms_per_step and eager else f"{'':>9}"
    rate = f"{gemm_tflop / row.ms_per_step * 1e3:8.1f}" if gemm_tflop and row.ms_per_step else f"{'':>8}"
    return f"{row.workload:<12} {row.implementation:<14} {ms} ms/step {ratio} {rate}  {row.note}"


def matmul_tflop(workload: str, args: argparse.Namespace) -> float:
    """Matmul work of one step, 3x the forward's (input and weight gradients), as ``gpt_flops`` counts it."""
    if workload == "gpt2-small":
        from gpt_workload import GPTConfig, gpt_flops

        config = {**GPT2_SMALL, "layers": args.gpt_layers}
        return gpt_flops(GPTConfig(**{key: config[key] for key in ("vocab", "context", "d_model", "heads", "layers", "batch")})) / 1e12
    sizes = (784, 128, 64, 10)
    return 3 * 2 * int(workload.split("-")[1]) * sum(a * b for a, b in zip(sizes, sizes[1:])) / 1e12


def summary(rows: list[Row], args: argparse.Namespace) -> list[str]:
    """Every row again once all are in (a kiln row is timed before torch-eager's, so its ratio shows only here)."""
    return [format_row(row, rows, matmul_tflop(row.workload, args)) for row in rows]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(f"{'workload':<12} {'implementation':<14} {'time':>10}         {'vs eager':>9}")
        rows = run(args)
    except BenchmarkError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"\n{'workload':<12} {'implementation':<14} {'time':>10}         {'vs eager':>9} {'TFLOP/s':>8}")
    print("\n".join(summary(rows, args)))
    print("\n(ratios: time over torch-eager's on the same workload; lower is faster. TFLOP/s: the step's matmul work,"
          " 3x the forward's, over its time)")
    return 1 if any(r.note.startswith("failed") and r.implementation == "kiln-cupy" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
