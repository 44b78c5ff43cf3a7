"""Activation checkpointing on the W4 GPT: planned memory peak and step time, with and without, in one run.

    python benchmarks/checkpoint_memory.py                     # 2 and 6 layers, 1 thread
    python benchmarks/checkpoint_memory.py --layers 2,6,12 --steps 100 --threads 2

Each block of W4's GPT (benchmarks/gpt_workload.py: vocab 256, context 64,
d_model 128, 4 heads, AdamW, batch 16) runs through
``kiln.utils.checkpoint.checkpoint`` in the checkpointed variant. Printed per
depth: the NumPy backend's planned peak (the most bytes of planned buffers
live at once) and its pooled buffer bytes, the median step time of each
variant (the two interleaved in rounds, as train_step.py does) and the ratios
checkpointed / plain. Thread pools are pinned before NumPy loads.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="2,6", help="comma-separated GPT depths")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    return parser.parse_args(argv)


def checkpoint_blocks(model):
    """``checkpoint(block, x)`` around every block, as a PyTorch user wraps them."""
    from kiln.utils.checkpoint import checkpoint

    for block in model.blocks:
        forward = block.forward
        block.forward = lambda x, forward=forward: checkpoint(forward, x, use_reentrant=False)
    return model


def variant(layers: int, checkpointed: bool):
    """The compiled W4 step at ``layers`` (after its compiling call) and the memory plan's bytes at its batch."""
    from gpt_workload import GPTConfig, gpt_batch, kiln_gpt

    from kiln.compiler.passes.plan_memory import bytes_summary

    config = GPTConfig(layers=layers)
    model, step = kiln_gpt(config)
    if checkpointed:
        checkpoint_blocks(model)
    x, y = gpt_batch(config)
    step(x, y)
    memory = bytes_summary(list(step.compiled.values())[-1].executable.graph.memory_plan, {"N": config.batch})
    return (lambda: step(x, y)), memory


def measure(layers: int, steps: int, warmup: int) -> dict[str, object]:
    from train_step import interleaved_medians

    runs = {name: variant(layers, name == "checkpointed") for name in ("plain", "checkpointed")}
    times = interleaved_medians({name: run for name, (run, _) in runs.items()}, steps, warmup)
    return {"layers": layers, "memory": {name: memory for name, (_, memory) in runs.items()}, "seconds": times}


def report(row: dict[str, object]) -> str:
    memory, seconds = row["memory"], row["seconds"]
    mib = {name: {key: value / 2**20 for key, value in bytes_.items()} for name, bytes_ in memory.items()}  # type: ignore[union-attr]
    plain, checkpointed = mib["plain"], mib["checkpointed"]
    return (f"{row['layers']:>6} | {plain['peak']:9.2f} | {checkpointed['peak']:9.2f} | {checkpointed['peak'] / plain['peak']:5.2f}x"
            f" | {plain['pooled']:9.2f} | {checkpointed['pooled']:9.2f}"
            f" | {seconds['plain'] * 1e3:8.2f} | {seconds['checkpointed'] * 1e3:8.2f} | {seconds['checkpointed'] / seconds['plain']:5.2f}x")


HEADER = ("layers | peak MiB plain | checkpointed | ratio | pooled MiB plain | checkpointed | ms plain | checkpointed | ratio\n"
          "-----: | -------------: | -----------: | ----: | ---------------: | -----------: | -------: | -----------: | ----:")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]
    print(f"W4 GPT with and without checkpointed blocks, {args.threads} thread(s), median of {args.steps} steps each")
    print(HEADER)
    for layers in (int(text) for text in args.layers.split(",") if text.strip()):
        print(report(measure(layers, args.steps, args.warmup)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
