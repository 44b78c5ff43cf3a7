"""Half precision on CPU: kiln-numpy's training step in float32, float16 and bfloat16 next to PyTorch eager in each.

    python benchmarks/half_precision.py                       # W1, W3, W5; 1 thread; writes benchmarks/half_precision.json
    python benchmarks/half_precision.py --workloads W5 --steps 60 --threads 2
    python benchmarks/half_precision.py --quick --json out.json   # a tiny run (the smoke test's): W1 and W5 at batch 16
    python benchmarks/half_precision.py --copyto-casts            # also kiln's half steps with casts as plain np.copyto

The NumPy backend keeps float16/bfloat16 parameters, activations and optimizer state in 16 bits and computes each
op in float32 between casts (``widen-half``, PyTorch's CPU "opmath"), so half precision saves bytes, not
arithmetic. Workloads of ``train_step.py``: W1 (MLP 784-128-64-10, SGD, batch 128), W3 (W1 with Adam) and W5 (the
CNN of ``cnn_workload.py``, SGD with momentum, batch 256). Per workload, in one run:

- the median step time of kiln's compiled step and of PyTorch eager in each dtype, and of the hand-written NumPy
  float32 step (W1, W3), candidates interleaved in rounds (``train_step.interleaved_medians``); ratios to torch in
  the same dtype and to kiln's own float32 step (below 1.00x: kiln is faster);
- the first step's loss (same initial weights and batch: a half loss is float32's up to rounding, kiln's and
  torch's alike);
- bytes of parameters and optimizer state (kiln's and torch's), and the memory plan's peak of the step's buffers
  (activations, gradients, the float32 temporaries of widened ops; ``plan_memory.bytes_summary``);
- where half time goes: the seconds per step of the compiled code's casts by direction (its ``np.copyto`` timed
  through a wrapper module bound in the generated function's namespace) against the step's time in that run.

Then the throughput of the casts themselves (``astype``, ``np.copyto`` into a preallocated array, and the
statement kiln's code generator emits for ``tensor.cast``) for float32 <-> float16 (NumPy) and float32 <-> bfloat16
(``ml_dtypes``) on ordinary values (N(0, 1)) and on tiny ones (|x| ~ 1e-6: subnormal in float16, as a float16 Adam's
second moment), and kiln eager's per-op time (``a + b``, ``relu``, ``a @ b`` on 64x64) in each dtype against
torch's. Thread pools are pinned to ``--threads`` before NumPy and torch load; the settings are printed and saved.
"""

from __future__ import annotations

import argparse
import os
import sys


def _arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--workloads", default="W1,W3,W5")
    parser.add_argument("--batch", type=int, default=None, help="every workload at this batch size (default: each workload's)")
    parser.add_argument("--cast-elements", type=int, default=1 << 17, help="array size of the cast throughput table")
    parser.add_argument("--copyto-casts", action="store_true",
                        help="also time kiln's half steps with every tensor.cast as a plain np.copyto (the code before half_cast.py)")
    parser.add_argument("--quick", action="store_true", help="a tiny run: W1 and W5 at batch 16, 5 steps, small casts")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "half_precision.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.workloads, args.batch, args.steps, args.warmup, args.cast_elements = "W1,W5", args.batch or 16, 5, 1, 1 << 12
    return args


if __name__ == "__main__":
    ARGS = _arguments()
    for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[_name] = str(ARGS.threads)  # as train_step.py's _pin_threads (importing it would load NumPy first)
    PINNED = {_name: os.environ[_name] for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}

import dataclasses  # noqa: E402  (after pinning the thread pools)
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import timeit  # noqa: E402
import types  # noqa: E402
from collections import defaultdict  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peer import torch_training_step  # noqa: E402
from train_step import WORKLOADS, Workload, _load_kiln_weights, _torch_version, batch, interleaved_medians, memory_bytes, numpy_step  # noqa: E402

DTYPES = ("float32", "float16", "bfloat16")


@dataclasses.dataclass
class Candidate:
    """One implementation in one dtype, built and run once (its first step's loss kept)."""

    run: Callable[[], object]
    loss: float
    bytes: dict[str, int]
    step: Any = None
    """kiln's ``TrainStep`` (for its memory plan and generated code); None for the peers."""


def numpy_dtype(name: str) -> np.dtype:
    """NumPy's dtype for ``name`` (``ml_dtypes.bfloat16`` for bfloat16), as kiln maps it."""
    import kiln
    from kiln.compiler.ir.types import DType

    return DType.of(getattr(kiln, name)).numpy


# --- kiln -----------------------------------------------------------------------------------


def kiln_candidate(workload: Workload, dtype: str) -> Candidate:
    """kiln's compiled step for the workload, the model and its batch converted to ``dtype`` (as ``model.half()``)."""
    import kiln
    import kiln.nn.functional as F

    model, x, y = _kiln_model(workload)
    model.to(getattr(kiln, dtype))
    optimizer = workload_optimizer(kiln.optim, model.parameters(), workload)
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer)
    x = x.astype(numpy_dtype(dtype))
    loss = step(x, y)
    state = sum(a.nbytes for p in model.parameters() for a in optimizer.state_of(p).values())
    sizes = {"parameters": sum(p.data.nbytes for p in model.parameters()), "optimizer_state": state}
    return Candidate(lambda: step(x, y), float(loss), sizes, step)


def _kiln_model(workload: Workload) -> tuple[Any, np.ndarray, np.ndarray]:
    """W1/W3's MLP with ``train_step.initial_weights`` or W5's CNN (``kiln.manual_seed(0)``), and the float32 batch."""
    import kiln
    import kiln.nn as nn

    if workload.name == "W5":
        from cnn_workload import CHANNELS, CLASSES, CNNConfig, cnn, cnn_batch

        kiln.manual_seed(0)
        return (cnn(CHANNELS[1:], CLASSES), *cnn_batch(CNNConfig(batch=workload.batch)))
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    _load_kiln_weights(model)
    return (model, *batch(workload))


def workload_optimizer(optim: Any, params: Any, workload: Workload) -> Any:
    """The workload's optimizer from ``optim`` (``kiln.optim`` or ``torch.optim``: the same names and options)."""
    if workload.optimizer == "adam":
        return optim.Adam(params, lr=workload.lr)
    return optim.SGD(params, lr=workload.lr, momentum=0.9 if workload.optimizer == "sgd-momentum" else 0)


# --- PyTorch ---------------------------------------------------------------------------------


def torch_candidate(workload: Workload, dtype: str, threads: int) -> Candidate:
    """PyTorch eager's step from the same float32 weights as kiln's, model and batch converted to ``dtype``."""
    import torch

    torch.set_num_threads(threads)
    kiln_model, x, y = _kiln_model(workload)
    net = _torch_net(torch.nn, workload)
    net.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in kiln_model.state_dict().items()})
    net.to(getattr(torch, dtype))
    optimizer = workload_optimizer(torch.optim, net.parameters(), workload)
    inputs, targets = torch.from_numpy(x).to(getattr(torch, dtype)), torch.from_numpy(y)
    step = torch_training_step(optimizer, lambda i, t: torch.nn.functional.cross_entropy(net(i), t), inputs, targets)
    loss = float(step().detach())
    state = sum(v.nbytes for entry in optimizer.state.values() for v in entry.values() if torch.is_tensor(v))
    return Candidate(step, loss, {"parameters": sum(p.nbytes for p in net.parameters()), "optimizer_state": state})


def _torch_net(nn: Any, workload: Workload) -> Any:
    """The workload's network in ``torch.nn``, its parameter names those of kiln's model."""
    if workload.name != "W5":
        return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    from cnn_workload import CHANNELS, CLASSES, KERNEL, SIDE

    (c0, c1, c2), k = CHANNELS, KERNEL
    return nn.Sequential(nn.Conv2d(c0, c1, k, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c1, c2, k, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c2 * (SIDE // 4) ** 2, CLASSES))


# --- one workload ----------------------------------------------------------------------------


def run_workload(workload: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """Build every candidate, time them interleaved, and measure the kiln steps' casts and memory plans."""
    candidates: dict[str, Candidate | None] = {}
    for dtype in DTYPES:
        candidates[f"kiln-numpy {dtype}"] = kiln_candidate(workload, dtype)
    if args.copyto_casts:
        for dtype in DTYPES[1:]:
            candidates[f"kiln-numpy, np.copyto casts {dtype}"] = with_copyto_casts(lambda: kiln_candidate(workload, dtype))
    for dtype in DTYPES:
        candidates[f"torch eager {dtype}"] = _guarded(lambda: torch_candidate(workload, dtype, args.threads))
    if workload.name != "W5":
        hand_written = numpy_step(workload)
        candidates["numpy (hand-written) float32"] = Candidate(hand_written, float(hand_written()), {})
    steps = args.steps if workload.name != "W5" else max(args.steps // 4, 5)
    timings = interleaved_medians({name: c and c.run for name, c in candidates.items()}, steps, args.warmup)
    row: dict[str, Any] = {"workload": workload.name, "batch": workload.batch, "optimizer": workload.optimizer, "median_step_s": timings}
    row["loss"] = {name: c.loss for name, c in candidates.items() if c is not None}
    row["bytes"] = {name: c.bytes for name, c in candidates.items() if c is not None and c.bytes}
    for dtype in DTYPES:
        kiln = candidates[f"kiln-numpy {dtype}"]
        row["bytes"][f"kiln-numpy {dtype}"]["plan"] = memory_bytes(kiln.step, workload.batch)
    row["casts"] = {dtype: cast_seconds(candidates[f"kiln-numpy {dtype}"], max(steps // 2, 3)) for dtype in DTYPES[1:]}
    return row


def with_copyto_casts(build: Callable[[], Candidate]) -> Candidate:
    """``build()`` with the NumPy backend emitting every ``tensor.cast`` as ``np.copyto`` (NumPy's and ml_dtypes'
    own conversions, as before ``backends/numpy/half_cast.py``), on a cleared code cache: the in-process baseline."""
    from kiln.backends.numpy import codegen, out_kernels

    emitter = out_kernels.OUT_KERNELS["tensor.cast"]
    out_kernels.OUT_KERNELS["tensor.cast"] = lambda args, out, attrs: [f"np.copyto({out}, {args[0]}, casting='unsafe')"]
    codegen._CODE_CACHE.clear()
    try:
        return build()
    finally:
        out_kernels.OUT_KERNELS["tensor.cast"] = emitter
        codegen._CODE_CACHE.clear()


def _guarded(build: Callable[[], Candidate]) -> Candidate | None:
    try:
        return build()
    except Exception as error:  # a peer that fails to run (a dtype torch lacks on this CPU) is reported, not fatal
        print(f"  (skipped: {type(error).__name__}: {str(error).splitlines()[0][:120]})", file=sys.stderr)
        return None


# --- where half time goes --------------------------------------------------------------------


def cast_seconds(candidate: Candidate, steps: int) -> dict[str, float]:
    """Seconds per step of the compiled code's casts by direction (``"float32->float16"``...) and ``"step"``, the step
    time in the same (wrapped) run: the generated function's ``np`` and ``_nn`` become copies whose ``copyto`` and
    ``cast_into`` (what the emitted ``tensor.cast`` calls) add up the seconds of each call between two dtypes."""
    namespace = generated_function(list(candidate.step.compiled.values())[-1].executable).__globals__
    seconds: dict[str, float] = defaultdict(float)
    originals = {name: namespace[name] for name in ("np", "_nn")}
    namespace.update({name: _timing_copy(module, seconds) for name, module in originals.items()})
    try:
        candidate.run()
        seconds.clear()
        start = time.perf_counter()
        for _ in range(steps):
            candidate.run()
        seconds["step"] = time.perf_counter() - start
    finally:
        namespace.update(originals)
    return {name: total / steps for name, total in seconds.items()}


def generated_function(executable: Any) -> Any:
    """The NumPy backend's generated step function inside ``executable`` (under its ``np.errstate`` wrapper)."""
    function = executable.function
    while not function.__code__.co_filename.startswith("<kiln:"):  # codegen compiles its source as "<kiln:graph name>"
        function = function.__wrapped__  # under_errstate's wrapper
    return function


def _timing_copy(module: types.ModuleType, seconds: dict[str, float]) -> types.ModuleType:
    """A copy of ``module`` whose ``copyto`` and ``cast_into`` (if it has them) add each cast's seconds to ``seconds``."""
    timed = types.ModuleType(module.__name__)
    timed.__dict__.update(module.__dict__)
    for name in ("copyto", "cast_into"):
        if hasattr(module, name):
            setattr(timed, name, _timed_cast(getattr(module, name), name == "copyto", seconds))
    return timed


def _timed_cast(function: Callable[..., None], out_first: bool, seconds: dict[str, float]) -> Callable[..., None]:
    def call(first: Any, second: Any, *args: Any, **kwargs: Any) -> None:
        out, source = (first, second) if out_first else (second, first)
        start = time.perf_counter()
        function(first, second, *args, **kwargs)
        if getattr(source, "dtype", out.dtype) != out.dtype:
            seconds[f"{source.dtype}->{out.dtype}"] += time.perf_counter() - start

    return call


# --- casts and eager ops ---------------------------------------------------------------------


def cast_throughput(elements: int) -> list[dict[str, Any]]:
    """Million elements a second of each half cast by ``astype``, ``np.copyto`` and kiln's emitted ``tensor.cast``."""
    import kiln
    from kiln.compiler.ir.types import DType

    rng = np.random.default_rng(0)
    values = {"N(0,1)": rng.standard_normal(elements).astype(np.float32),
              "tiny 1e-6": (rng.standard_normal(elements) * 1e-6).astype(np.float32)}
    rows = []
    for half in ("float16", "bfloat16"):
        for data, x in values.items():
            h = x.astype(numpy_dtype(half))
            for source, target in ((x, DType.of(getattr(kiln, half))), (h, DType.f32)):
                rows.append({"cast": f"{source.dtype}->{target.numpy}", "values": data, **_cast_rates(source, target)})
    return rows


def _cast_rates(source: np.ndarray, target: Any) -> dict[str, float]:
    from kiln.backends.numpy import out_kernels, out_nn

    out = np.empty(source.shape, target.numpy)
    statement = "\n".join(out_kernels.OUT_KERNELS["tensor.cast"](["source"], "out", {"dtype": target}))
    namespace = {"np": np, "_nn": out_nn, "source": source, "out": out}
    emitted = compile(statement, "<tensor.cast>", "exec")
    ways = {"astype": lambda: source.astype(target.numpy), "copyto": lambda: np.copyto(out, source, casting="unsafe"),
            "kiln": lambda: exec(emitted, namespace)}
    return {name: source.size / _best_seconds(way) / 1e6 for name, way in ways.items()}


def _best_seconds(action: Callable[[], object], number: int = 10, repeat: int = 5) -> float:
    return min(timeit.repeat(action, number=number, repeat=repeat)) / number


def eager_op_times(size: int = 64) -> dict[str, dict[str, float]]:
    """Microseconds per call of eager ``a + b``, ``relu(a)`` and ``a @ b`` on ``size`` x ``size`` tensors, kiln and torch."""
    import kiln
    import kiln.nn.functional as F

    import torch

    base = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    times: dict[str, dict[str, float]] = {}
    for dtype in DTYPES:
        a, b = kiln.tensor(base).to(getattr(kiln, dtype)), kiln.tensor(base.T.copy()).to(getattr(kiln, dtype))
        ta, tb = torch.from_numpy(base).to(getattr(torch, dtype)), torch.from_numpy(base.T.copy()).to(getattr(torch, dtype))
        for name, kiln_op, torch_op in (("a + b", lambda: a + b, lambda: ta + tb), ("relu", lambda: F.relu(a), lambda: torch.relu(ta)),
                                        ("a @ b", lambda: a @ b, lambda: ta @ tb)):
            times.setdefault(f"kiln {name}", {})[dtype] = 1e6 * _best_seconds(kiln_op, 50)
            times.setdefault(f"torch {name}", {})[dtype] = 1e6 * _best_seconds(torch_op, 50)
    return times


# --- the report ------------------------------------------------------------------------------


def print_steps(rows: list[dict[str, Any]]) -> None:
    print(f"{'workload':<9}{'implementation':<38}{'median ms':>10}{'vs torch':>10}{'vs kiln f32':>12}{'1st loss':>10}")
    for row in rows:
        timings = row["median_step_s"]
        for name, seconds in timings.items():
            if seconds is None:
                print(f"{row['workload']:<9}{name:<38}{'n/a':>10}")
                continue
            dtype = name.split()[-1]
            print(f"{row['workload']:<9}{name:<38}{seconds * 1e3:>10.3f}{_ratio(seconds, timings.get(f'torch eager {dtype}'))}"
                  f"{_ratio(seconds, timings['kiln-numpy float32'], 12)}{row['loss'][name]:>10.4f}")


def print_bytes(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'workload':<9}{'dtype':<10}{'params KiB':>11}{'opt state KiB':>14}{'plan peak KiB':>14}{'plan buffers KiB':>17}"
          f"{'torch params+state KiB':>23}")
    for row in rows:
        for dtype in DTYPES:
            kiln, torch = row["bytes"][f"kiln-numpy {dtype}"], row["bytes"].get(f"torch eager {dtype}")
            peer = f"{(torch['parameters'] + torch['optimizer_state']) / 1024:>23.1f}" if torch else f"{'n/a':>23}"
            print(f"{row['workload']:<9}{dtype:<10}{kiln['parameters'] / 1024:>11.1f}{kiln['optimizer_state'] / 1024:>14.1f}"
                  f"{kiln['plan']['peak'] / 1024:>14.1f}{kiln['plan']['pooled'] / 1024:>17.1f}{peer}")


def print_casts(rows: list[dict[str, Any]], throughput: list[dict[str, Any]]) -> None:
    print("\nkiln's half steps: seconds per step in casts (the compiled code's np.copyto and _nn.cast_into between dtypes)")
    for row in rows:
        for dtype, seconds in row["casts"].items():
            directions = ", ".join(f"{name} {value * 1e3:.3f} ms" for name, value in seconds.items() if name != "step")
            print(f"{row['workload']:<9}{dtype:<10} step {seconds['step'] * 1e3:.3f} ms, casts "
                  f"{100 * _cast_total(seconds) / seconds['step']:.0f}%: {directions}")
    print("\ncast throughput, Melem/s (best of 5; copyto: into a preallocated array; kiln: the emitted tensor.cast)")
    print(f"{'cast':<22}{'values':<11}{'astype':>9}{'copyto':>9}{'kiln':>9}")
    for entry in throughput:
        print(f"{entry['cast']:<22}{entry['values']:<11}{entry['astype']:>9.0f}{entry['copyto']:>9.0f}{entry['kiln']:>9.0f}")


def _cast_total(seconds: dict[str, float]) -> float:
    return sum(value for name, value in seconds.items() if name != "step")


def print_eager(times: dict[str, dict[str, float]]) -> None:
    print(f"\neager per-op time, us (64x64; best of 5){''.join(f'{dtype:>10}' for dtype in DTYPES)}{'bf16/f32':>10}")
    for name, by_dtype in times.items():
        print(f"{name:<41}{''.join(f'{by_dtype[d]:>10.1f}' for d in DTYPES)}{by_dtype['bfloat16'] / by_dtype['float32']:>9.2f}x")


def _ratio(seconds: float, reference: float | None, width: int = 10) -> str:
    return f"{seconds / reference:>{width - 1}.2f}x" if reference else f"{'n/a':>{width}}"


def main(args: argparse.Namespace, pinned: dict[str, str]) -> dict[str, Any]:
    import ml_dtypes

    from kiln.runtime.host_memory import keep_freed_host_memory

    kept = keep_freed_host_memory()  # before any candidate runs: kiln, torch and NumPy all get the same malloc
    print(f"threads pinned: {pinned}; numpy {np.__version__}, ml_dtypes {ml_dtypes.__version__}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus; freed host memory kept (mallopt): {kept}")
    workloads = [WORKLOADS[name.strip()] for name in args.workloads.split(",") if name.strip()]
    rows = [run_workload(dataclasses.replace(w, batch=args.batch or w.batch), args) for w in workloads]
    throughput, eager = cast_throughput(args.cast_elements), eager_op_times()
    print_steps(rows)
    print_bytes(rows)
    print_casts(rows, throughput)
    print_eager(eager)
    report = {"threads": pinned, "numpy": np.__version__, "ml_dtypes": ml_dtypes.__version__, "torch": _torch_version(),
              "python": sys.version.split()[0], "machine": platform.platform(), "cpus": os.cpu_count(), "freed_host_memory_kept": kept,
              "steps": args.steps, "rows": rows, "cast_throughput": throughput, "eager_op_us": eager}
    with open(args.json, "w") as file:
        json.dump(report, file, indent=2)
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main(ARGS, PINNED)
