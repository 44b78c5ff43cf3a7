"""What the CuPy backend launches and moves for one GPT training step, computed from its lowered graph (no GPU).

    python benchmarks/cupy_plan_model.py                      # the GPT-2-small step of gpu_benchmark.py
    python benchmarks/cupy_plan_model.py --chunk 0            # causal attention unchunked, for comparison
    python benchmarks/cupy_plan_model.py --context 64 --layers 2 --d-model 128 --heads 4 --vocab 256 --batch 16

A model, not a measurement: each op is charged the bytes of its operands and results once, plus a GEMM's product
written and read back when an epilogue kernel follows it (a lower bound that ignores re-reads inside a kernel and
cache hits between kernels), and each GEMM ``2 M N K`` FLOPs. Last, the device memory of the step's intermediates:
all of them together, and the most live at once (the generated step drops each after its last use). It tells what
a lowering change saves before a GPU run measures it; ``gpu_check.sh`` measures the step itself.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "examples"), os.path.join(ROOT, "benchmarks")]

from gpu_benchmark import GPT2_SMALL  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("vocab", "context", "layers", "heads", "batch"):
        parser.add_argument(f"--{name}", type=int, default=GPT2_SMALL[name])
    parser.add_argument("--d-model", type=int, default=GPT2_SMALL["d_model"])
    parser.add_argument("--chunk", type=int, default=None, help="causal-attention query chunk (0: whole; default: the backend's)")
    return parser.parse_args(argv)


def lowered_step(args: argparse.Namespace) -> Any:
    """The GPT step graph as the CuPy backend lowers it (traced with kiln's NumPy-side builder; nothing runs)."""
    import numpy as np

    import kiln
    from gpt_tiny import GPT
    from kiln.backends.cupy import lower_for_cupy
    from kiln.compiler.passes import chunk_causal_attention
    from kiln.compiler.passes.manager import PassManager
    from kiln.runtime.data import lm_loss
    from kiln.runtime.step_graph import build_step_graph
    from kiln.runtime.train_step import batch_specs, collection_paused

    kiln.manual_seed(0)
    model = GPT(args.vocab, args.context, args.d_model, args.heads, args.layers)
    optimizer = kiln.optim.AdamW(model.parameters(), lr=GPT2_SMALL["lr"], weight_decay=GPT2_SMALL["weight_decay"])
    step = kiln.compile_train_step(model, lm_loss, optimizer)
    tokens = np.zeros((args.batch, args.context), np.int64)
    with collection_paused():
        graph = build_step_graph(model, lm_loss, optimizer, batch_specs([tokens, tokens]), step.options).graph
        PassManager(step.pipeline).run(graph)
    if args.chunk is not None:
        chunk_causal_attention.CAUSAL_CHUNK = args.chunk  # 0: every attention whole
    return lower_for_cupy(graph)


def size(dim: Any, batch: int) -> int:
    """A dim's value with the batch symbol ``N`` bound (``1024*N`` included)."""
    from kiln.compiler.ir.types import dim_value

    return dim_value(dim, {"N": batch})


def nbytes(value: Any, batch: int) -> int:
    return math.prod(size(d, batch) for d in value.type.shape) * value.type.dtype.numpy.itemsize


def category(op: Any, args: argparse.Namespace) -> str:
    """``attention scores`` (anything holding a (query, key) score matrix: per head, neither axis the head width),
    ``logits`` (vocabulary-wide), or ``other``."""
    values, width = list(op.operands) + list(op.results), args.d_model // args.heads
    if any(v.type.rank == 4 and v.type.shape[1] == args.heads and width not in v.type.shape[-2:] for v in values):
        return "attention scores"
    return "logits" if any(v.type.rank >= 1 and v.type.shape[-1] == args.vocab for v in values) else "other"


def moved(op: Any, launches: list, batch: int) -> int:
    """Bytes of the op's operands and results; a GEMM with an epilogue kernel also writes its product and reads it back."""
    total = sum(nbytes(v, batch) for v in list(op.operands) + list(op.results))
    if op.name == "fused.matmul" and len(launches) > 1:
        total += 2 * nbytes(op.results[0], batch)
    return total


def gemm_flops(op: Any, batch: int) -> int:
    if op.name not in ("tensor.matmul", "fused.matmul"):
        return 0
    inner = size(op.operands[0].type.shape[-1], batch)
    return 2 * inner * math.prod(size(d, batch) for d in op.results[0].type.shape)


def model(args: argparse.Namespace, graph: Any = None) -> dict[str, dict[str, float]]:
    """Per category: launches, GB moved, GEMM TFLOP (of ``graph``, the lowered step; built from ``args`` if not given)."""
    from kiln.backends.cupy.plan import op_launches

    table: dict[str, dict[str, float]] = collections.defaultdict(lambda: {"launches": 0, "GB": 0.0, "TFLOP": 0.0})
    for op in (graph if graph is not None else lowered_step(args)).ops:
        launches = op_launches(op)
        if not launches:
            continue
        row = table[category(op, args)]
        row["launches"] += len(launches)
        row["GB"] += moved(op, launches, args.batch) / 1e9
        row["TFLOP"] += gemm_flops(op, args.batch) / 1e12
    table["total"] = {key: sum(row[key] for row in list(table.values())) for key in ("launches", "GB", "TFLOP")}
    return dict(table)


def device_memory(graph: Any, batch: int) -> dict[str, float]:
    """GB of the step's intermediates: all its results together, and at most live at once when each variable is
    dropped after its last use (``executable.dying_after``; a view keeps its base alive). Inputs (parameters, state,
    the batch) and a kernel's own scratch are not counted."""
    from kiln.backends.cupy.executable import dying_after
    from kiln.backends.cupy.plan import VIEW_OPS, op_launches

    base: dict[Any, Any] = {}
    size_of: dict[Any, int] = {}
    holders: dict[Any, int] = collections.Counter()
    live = peak = allocated = 0
    for op, dying in zip(graph.ops, dying_after(graph)):
        aliases = op.name == "tensor.constant" or (op.name in VIEW_OPS and not op_launches(op))
        for result in op.results:
            base[result] = base.get(op.operands[0]) if aliases and op.operands else (None if aliases else result)
            if base[result] is result:
                size_of[result] = nbytes(result, batch)
                live, allocated = live + size_of[result], allocated + size_of[result]
            if base[result] is not None:
                holders[base[result]] += 1
        peak = max(peak, live)
        for value in dying:
            owner = base.get(value)
            if owner is not None:
                holders[owner] -= 1
                live -= size_of[owner] if holders[owner] == 0 else 0
    return {"allocated": allocated / 1e9, "peak live": peak / 1e9}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    graph = lowered_step(args)
    rows = model(args, graph)
    print(f"CuPy step model: GPT {args.layers} layers, d_model {args.d_model}, {args.heads} heads, context {args.context}, "
          f"batch {args.batch}, vocab {args.vocab}; causal chunk {args.chunk if args.chunk is not None else 'default'}")
    print(f"{'':18s} {'launches':>9s} {'GB moved':>9s} {'GEMM TFLOP':>11s}")
    for name, row in rows.items():
        print(f"{name:18s} {row['launches']:9.0f} {row['GB']:9.2f} {row['TFLOP']:11.3f}")
    memory = device_memory(graph, args.batch)
    print(f"intermediates: {memory['allocated']:.2f} GB in all, at most {memory['peak live']:.2f} GB live at once "
          "(each dropped after its last use)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
