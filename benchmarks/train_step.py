"""Training-step benchmark: kiln-numpy side by side with PyTorch eager, torch.compile and hand-written NumPy.

    python benchmarks/train_step.py                  # W1-W6, 1 thread, prints tables, writes benchmarks/results.json
    python benchmarks/train_step.py --threads 2 --steps 300 --json out.json --workloads W1

Workloads (W1-W3: MLP 784-128-64-10, ReLU, softmax cross-entropy):
  W1  SGD lr 0.01, batch 128      W2  the same at batch 1024      W3  W1 with Adam (lr 1e-3)
  W4  GPT-style LM (examples/gpt_tiny.py): vocab 256, context 64, d_model 128, 4 heads, 2 layers, MLP 512,
      GELU (GPT-2's tanh approximation, in kiln and torch alike), pre-LN, AdamW lr 1e-3 wd 0.01, batch 16
  W5  CNN (examples/cnn_digits.py): 8x8 inputs, conv 1-16-32 3x3 pad 1, ReLU, 2x2 max pool, linear, SGD lr 0.05
      momentum 0.9, batch 256
  W6  character LSTM LM (lstm_workload.py): vocab 64, embedding 32, 2-layer LSTM hidden 128, sequence 64, linear
      head at every step, Adam lr 1e-3, batch 32 (kiln unrolls the time loop; torch runs its fused CPU LSTM)
      (W4-W6: no hand-written NumPy version)

Per-step median wall time over ``--steps`` timed steps (after a warm-up) of
the same batch, the candidates interleaved in rounds. Also: kiln's compile
time (trace + passes + codegen; then the same model again: the code cache),
compile time by phase of the W4 model at 2 to 24 layers, achieved GFLOP/s
(matmul FLOPs) against the machine's float32 GEMM rate measured in this run,
and the memory plan's bytes against one allocation per intermediate. Thread
pools are pinned before NumPy and PyTorch load; the settings are printed and saved.
"""

from __future__ import annotations

import argparse
import os
import sys


def _pin_threads(threads: int) -> dict[str, str]:
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
    for name in names:
        os.environ[name] = str(threads)
    return {name: os.environ[name] for name in names}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6")
    parser.add_argument("--compile-layers", default="2,6,12,24", help="W4 depths whose compile time is measured ('' for none)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json"))
    parser.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (it needs a C compiler)")
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = _arguments()
    PINNED = _pin_threads(ARGS.threads)

import json  # noqa: E402  (after pinning the thread pools)
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

from kiln.runtime.train_step import DEFAULT_PIPELINE  # noqa: E402
from torch_peer import torch_training_step  # noqa: E402

SIZES = (784, 128, 64, 10)


@dataclass(frozen=True)
class Workload:
    name: str
    batch: int
    optimizer: str
    lr: float


WORKLOADS = {
    "W1": Workload("W1", 128, "sgd", 0.01),
    "W2": Workload("W2", 1024, "sgd", 0.01),
    "W3": Workload("W3", 128, "adam", 1e-3),
    "W4": Workload("W4", 16, "adamw", 1e-3),
    "W5": Workload("W5", 256, "sgd-momentum", 0.05),
    "W6": Workload("W6", 32, "adam", 1e-3),
}


def median_step_seconds(step: Callable[[], object], steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_flops(batch: int) -> int:
    """Matmul FLOPs of one step: forward, input gradients (not of the first layer's input), weight gradients."""
    pairs = list(zip(SIZES, SIZES[1:]))
    forward = sum(2 * batch * n_in * n_out for n_in, n_out in pairs)
    return 3 * forward - 2 * batch * SIZES[0] * SIZES[1]


def gemm_rate(size: int = 1024, repeats: int = 10) -> float:
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = a.T.copy()
    out = np.empty_like(a)
    seconds = median_step_seconds(lambda: np.matmul(a, b, out=out), repeats, 2)
    return 2 * size**3 / seconds / 1e9


def batch(workload: Workload) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((workload.batch, SIZES[0]), dtype=np.float32), rng.integers(0, SIZES[-1], workload.batch)


def initial_weights() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    layers = []
    for n_in, n_out in zip(SIZES, SIZES[1:]):
        bound = 1 / np.sqrt(n_in)
        layers.append((rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32), rng.uniform(-bound, bound, n_out).astype(np.float32)))
    return layers


# --- kiln -----------------------------------------------------------------------------------


def kiln_step(workload: Workload, pipeline: str, planned: bool = True):
    import kiln
    import kiln.nn as nn
    import kiln.nn.functional as F
    from kiln.backends.numpy import NumpyBackend

    NumpyBackend.plan_memory = planned
    model = nn.Sequential([nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)]) \
        if hasattr(nn, "ReLU") else _kiln_mlp(nn, F)
    _load_kiln_weights(model)
    params = model.parameters()
    optimizer = kiln.optim.SGD(params, lr=workload.lr) if workload.optimizer == "sgd" else kiln.optim.Adam(params, lr=workload.lr)
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer, pipeline=pipeline)
    x, y = batch(workload)
    start = time.perf_counter()
    step(x, y)
    compile_seconds = time.perf_counter() - start
    return (lambda: step(x, y)), compile_seconds, step


def _kiln_mlp(nn, F):
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(784, 128), nn.Linear(128, 64), nn.Linear(64, 10)

        def forward(self, x):
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    return MLP()


def _load_kiln_weights(model) -> None:
    arrays = [a for layer in initial_weights() for a in layer]
    for param, array in zip(model.parameters(), arrays):
        np.copyto(param.data, array.reshape(param.data.shape))


def kiln_recompile_seconds(workload: Workload) -> float:
    """Compile the same model a second time: tracing and passes run again, code generation hits the cache."""
    _, seconds, _ = kiln_step(workload, DEFAULT_PIPELINE)
    return seconds


# --- PyTorch ---------------------------------------------------------------------------------


def torch_step(workload: Workload, compiled: bool, threads: int):
    import torch

    torch.set_num_threads(threads)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        for layer, (weight, bias) in zip([m for m in model if isinstance(m, torch.nn.Linear)], initial_weights()):
            layer.weight.copy_(torch.from_numpy(weight))
            layer.bias.copy_(torch.from_numpy(bias))
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.lr) if workload.optimizer == "sgd" \
        else torch.optim.Adam(model.parameters(), lr=workload.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = (torch.from_numpy(a) for a in batch(workload))
    forward = torch.compile(lambda inputs, targets: loss_fn(model(inputs), targets)) if compiled else (lambda i, t: loss_fn(model(i), t))
    step = torch_training_step(optimizer, forward, x, y)
    start = time.perf_counter()
    step()
    return step, time.perf_counter() - start


# --- hand-written NumPy -----------------------------------------------------------------------


def numpy_step(workload: Workload):
    """The step as a NumPy programmer writes it: forward, backward, in-place update."""
    (w1, b1), (w2, b2), (w3, b3) = initial_weights()
    params = [w1, b1, w2, b2, w3, b3]
    adam = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    x, y = batch(workload)
    lr, count = np.float32(workload.lr), [0]

    def step():
        h1 = x @ w1.T + b1
        a1 = np.maximum(h1, 0)
        h2 = a1 @ w2.T + b2
        a2 = np.maximum(h2, 0)
        logits = a2 @ w3.T + b3
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(total[:, 0]) - shifted[np.arange(len(y)), y])
        g3 = exp / total
        g3[np.arange(len(y)), y] -= 1
        g3 /= len(y)
        g2 = (g3 @ w3) * (h2 > 0)
        g1 = (g2 @ w2) * (h1 > 0)
        grads = [g1.T @ x, g1.sum(0), g2.T @ a1, g2.sum(0), g3.T @ a2, g3.sum(0)]
        if workload.optimizer == "sgd":
            for p, g in zip(params, grads):
                p -= lr * g
        else:
            count[0] += 1
            _adam(params, grads, *adam, count[0], lr)
        return loss

    return step


def _adam(params, grads, means, squares, t: int, lr, beta1=0.9, beta2=0.999, eps=1e-8) -> None:
    step_size = lr / (1 - beta1**t)
    root_bias = np.sqrt(1 - beta2**t)
    for p, g, m, v in zip(params, grads, means, squares):
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        p -= step_size * m / (np.sqrt(v) / root_bias + eps)


# --- the run ----------------------------------------------------------------------------------


def memory_bytes(step, batch: int) -> dict[str, int]:
    """The memory plan of the step's generated code: bytes of its buffers against one allocation per value."""
    from kiln.compiler.passes.plan_memory import bytes_summary

    return bytes_summary(list(step.compiled.values())[-1].executable.graph.memory_plan, {"N": batch})


def run_workload(workload: Workload, args: argparse.Namespace) -> dict[str, object]:
    if workload.name in ("W4", "W5", "W6"):
        return run_model_workload(workload, args)
    row: dict[str, object] = {"workload": workload.name, "batch": workload.batch, "optimizer": workload.optimizer}
    from kiln.backends.numpy import NumpyBackend

    candidates: dict[str, Callable[[], object] | None] = {}
    candidates["kiln-numpy"], row["kiln_compile_s"], step = kiln_step(workload, DEFAULT_PIPELINE)
    row["memory_bytes"] = memory_bytes(step, workload.batch)
    row["kiln_recompile_s"] = kiln_recompile_seconds(workload)
    candidates["kiln-numpy (cse,dce; unplanned)"] = kiln_step(workload, "cse,dce", planned=False)[0]
    NumpyBackend.plan_memory = True
    candidates["numpy (hand-written)"] = numpy_step(workload)
    candidates["torch eager"] = _guarded(lambda: torch_step(workload, False, args.threads)[0])
    if not args.no_torch_compile:
        candidates["torch.compile"] = _guarded(lambda: torch_step(workload, True, args.threads)[0])
    timings = interleaved_medians(candidates, args.steps, args.warmup)
    row["median_step_s"] = timings
    row["gflops"] = {name: (step_flops(workload.batch) / t / 1e9 if t else None) for name, t in timings.items()}
    return row


def model_workload(workload: Workload) -> tuple[str, Any, Callable[..., Any], Callable[..., Any], Callable[[Any], int]]:
    """W4's, W5's or W6's description, config, kiln step builder, torch step builder and FLOPs: one shape for all."""
    if workload.name == "W6":
        from lstm_workload import LSTMConfig, kiln_lstm_step, lstm_flops, torch_lstm_step

        return ("character LSTM LM: vocab 64, embedding 32, 2-layer LSTM hidden 128, sequence 64, linear head",
                LSTMConfig(batch=workload.batch, lr=workload.lr), kiln_lstm_step, torch_lstm_step, lstm_flops)
    if workload.name == "W4":
        from gpt_workload import GPTConfig, gpt_flops, kiln_gpt_step, torch_gpt_step

        return ("GPT vocab 256, context 64, d_model 128, 4 heads, 2 layers, MLP 512, GELU tanh, pre-LN",
                GPTConfig(batch=workload.batch, lr=workload.lr), kiln_gpt_step, torch_gpt_step, gpt_flops)
    from cnn_workload import CNNConfig, cnn_flops, kiln_cnn_step, torch_cnn_step

    return ("CNN of examples/cnn_digits.py: conv 1-16-32 3x3, ReLU, max pool 2, linear; 8x8 inputs",
            CNNConfig(batch=workload.batch, lr=workload.lr), kiln_cnn_step, torch_cnn_step, cnn_flops)


def run_model_workload(workload: Workload, args: argparse.Namespace) -> dict[str, object]:
    """A model without a hand-written NumPy version (W4 the GPT, W5 the CNN, W6 the LSTM): kiln against torch eager
    and compile."""
    description, config, kiln_builder, torch_builder, flops = model_workload(workload)
    row: dict[str, object] = {"workload": workload.name, "batch": workload.batch, "optimizer": workload.optimizer, "model": description}
    start = time.perf_counter()
    kiln_candidate, model, step = kiln_builder(config)
    row["kiln_compile_s"] = time.perf_counter() - start  # the first call: compile and one step
    row["kiln_recompile_s"] = _seconds(lambda: kiln_builder(config))
    row["memory_bytes"] = memory_bytes(step, workload.batch)
    candidates: dict[str, Callable[[], object] | None] = {"kiln-numpy": kiln_candidate, "numpy (hand-written)": None}
    candidates["torch eager"] = _guarded(lambda: torch_builder(model, config, args.threads))
    if not args.no_torch_compile:
        candidates["torch.compile"] = _guarded(lambda: torch_builder(model, config, args.threads, compiled=True))
    timings = interleaved_medians(candidates, max(args.steps // 5, 25), max(args.warmup // 4, 3))
    row["median_step_s"] = timings
    row["gflops"] = {name: (flops(config) / t / 1e9 if t else None) for name, t in timings.items()}
    return row


def _seconds(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def compile_scaling(layer_counts: list[int], repeats: int = 2) -> list[dict[str, float]]:
    """Compile time by phase of the W4 model at each depth (a first compile: the code cache is cleared), the faster of
    ``repeats`` compiles, each after a full garbage collection (so no depth pays for the garbage of the one before)."""
    import gc

    from gpt_workload import GPTConfig, compile_phases

    def once(layers: int) -> dict[str, float]:
        gc.collect()
        return compile_phases(GPTConfig(layers=layers))

    return [min((once(layers) for _ in range(repeats)), key=lambda phases: phases["total_s"]) for layers in layer_counts]


def interleaved_medians(candidates: dict[str, Callable[[], object] | None], steps: int, warmup: int, rounds: int = 5) -> dict[str, float | None]:
    """Median step time of each candidate, measured in alternating rounds so machine drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name, step in candidates.items() if step is not None}
    for name in times:
        median_step_seconds(candidates[name], 1, warmup)
    for _ in range(rounds):
        for name in times:
            step = candidates[name]
            for _ in range(max(1, steps // rounds)):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]) if name in times else None) for name in candidates}


def _guarded(build: Callable[[], Callable[[], object]]) -> Callable[[], object] | None:
    try:
        step = build()
        step()  # torch.compile compiles here
        return step
    except Exception as error:  # a peer that fails to run is reported, not fatal
        print(f"  (skipped: {type(error).__name__}: {str(error).splitlines()[0][:120]})", file=sys.stderr)
        return None


def print_table(rows: list[dict[str, object]], gemm: float) -> None:
    print(f"{'workload':<9}{'implementation':<34}{'median ms':>10}{'vs numpy':>10}{'vs torch':>10}{'GFLOP/s':>9}{'% GEMM':>8}")
    for row in rows:
        timings = row["median_step_s"]
        reference, torch_eager = timings["numpy (hand-written)"], timings.get("torch eager")
        for name, seconds in timings.items():
            if seconds is None:
                print(f"{row['workload']:<9}{name:<34}{'n/a':>10}")
                continue
            gflops = row["gflops"][name]
            print(f"{row['workload']:<9}{name:<34}{seconds * 1e3:>10.3f}{_ratio(seconds, reference)}{_ratio(seconds, torch_eager)}"
                  f"{gflops:>9.1f}{100 * gflops / gemm:>7.1f}%")
        memory = row["memory_bytes"]
        print(f"{'':<9}kiln compile {row['kiln_compile_s'] * 1e3:.1f} ms (first call), same model again "
              f"{row['kiln_recompile_s'] * 1e3:.1f} ms; memory plan {memory['pooled'] / 2**20:.2f} MiB of buffers "
              f"(peak live {memory['peak'] / 2**20:.2f}) vs {memory['unplanned'] / 2**20:.2f} MiB one allocation per "
              f"value: -{100 * (1 - memory['pooled'] / memory['unplanned']):.0f}%")


def _ratio(seconds: float, reference: float | None) -> str:
    return f"{seconds / reference:>9.2f}x" if reference else f"{'n/a':>10}"


def print_compile_scaling(scaling: list[dict[str, float]]) -> None:
    if not scaling:
        return
    print("\nW4 compile time by depth (first compile: trace + autodiff, graph passes, backend lowering/fusion/plan/codegen)")
    print(f"{'layers':>6}{'ops':>7}{'trace ms':>10}{'passes ms':>11}{'backend ms':>12}{'total ms':>10}{'us/op':>8}")
    for entry in scaling:
        print(f"{entry['layers']:>6}{entry['ops']:>7}{entry['trace_s'] * 1e3:>10.1f}{entry['passes_s'] * 1e3:>11.1f}"
              f"{entry['backend_s'] * 1e3:>12.1f}{entry['total_s'] * 1e3:>10.1f}{entry['total_s'] / entry['ops'] * 1e6:>8.0f}")


def main(args: argparse.Namespace) -> None:
    from kiln.runtime.host_memory import keep_freed_host_memory

    kept = keep_freed_host_memory()  # before any candidate runs: kiln, torch and NumPy all get the same malloc
    gemm = gemm_rate()
    print(f"threads pinned: {PINNED}; numpy {np.__version__}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus; float32 GEMM 1024^3: {gemm:.1f} GFLOP/s; freed host memory kept (mallopt): {kept}")
    rows = [run_workload(WORKLOADS[name.strip()], args) for name in args.workloads.split(",")]
    scaling = compile_scaling([int(n) for n in args.compile_layers.split(",") if n.strip()])
    print_table(rows, gemm)
    print_compile_scaling(scaling)
    report = {"threads": PINNED, "gemm_gflops": gemm, "numpy": np.__version__, "torch": _torch_version(),
              "python": sys.version.split()[0], "machine": platform.platform(), "cpus": os.cpu_count(),
              "pipeline": DEFAULT_PIPELINE, "freed_host_memory_kept": kept, "rows": rows, "compile_scaling": scaling}
    with open(args.json, "w") as file:
        json.dump(report, file, indent=2)
    print(f"wrote {args.json}")


def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


if __name__ == "__main__":
    main(ARGS)
