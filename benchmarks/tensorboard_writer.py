"""kiln's SummaryWriter against torch.utils.tensorboard's, side by side: microseconds per call and the ratio.

    python benchmarks/tensorboard_writer.py                  # scalars, a 100k-value histogram, a 224x224 image
    python benchmarks/tensorboard_writer.py --repeats 3 --calls 500

Each row logs the same values through both writers into temporary folders, one writer interleaved with the other
for ``--repeats`` rounds, and prints the median time per call. The image is float CHW noise (it barely compresses,
so the PNG is large and the record's CRC-32C dominates: kiln computes it in vectorized NumPy lanes, TensorBoard's
writer byte by byte unless the ``crc32c`` extension is installed). Thread pools are pinned before NumPy loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="rounds, each timing both writers")
    parser.add_argument("--calls", type=int, default=2000, help="add_scalar calls a round (the others: 1/100 of it)")
    parser.add_argument("--image-size", type=int, default=224)
    return parser.parse_args(argv)


def rows(image_size: int) -> dict[str, Callable[[Any, int], None]]:
    """Row name -> ``log(writer, step)``."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal(100_000)
    image = rng.random((3, image_size, image_size)).astype(np.float32)
    return {
        "add_scalar": lambda writer, step: writer.add_scalar("loss", 0.5, step),
        "add_histogram (1e5 values)": lambda writer, step: writer.add_histogram("weights", values, step),
        f"add_image (3x{image_size}x{image_size} float)": lambda writer, step: writer.add_image("image", image, step),
    }


def time_per_call(make_writer: Callable[[str], Any], log: Callable[[Any, int], None], calls: int) -> float:
    with tempfile.TemporaryDirectory() as log_dir:
        writer = make_writer(log_dir)
        start = time.perf_counter()
        for step in range(calls):
            log(writer, step)
        writer.close()
        return (time.perf_counter() - start) / calls


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

    from kiln.utils.tensorboard import SummaryWriter

    writers = {"kiln": SummaryWriter, "torch": TorchSummaryWriter}
    print(f"{'call':34} {'kiln us':>10} {'torch us':>10} {'kiln/torch':>11}")
    for name, log in rows(args.image_size).items():
        calls = args.calls if name == "add_scalar" else max(1, args.calls // 100)
        times: dict[str, list[float]] = {peer: [] for peer in writers}
        for _ in range(args.repeats):
            for peer, make_writer in writers.items():
                times[peer].append(time_per_call(make_writer, log, calls))
        kiln_us, torch_us = (statistics.median(times[peer]) * 1e6 for peer in writers)
        print(f"{name:34} {kiln_us:10.1f} {torch_us:10.1f} {kiln_us / torch_us:11.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
