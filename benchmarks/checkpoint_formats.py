"""Checkpoint save and load time: kiln's two formats against torch.save/torch.load, on one state dict, in one run.

    python benchmarks/checkpoint_formats.py                   # a 100 MB float32 state dict, 3 rounds
    python benchmarks/checkpoint_formats.py --megabytes 400 --repeats 5

The state dict holds ``--tensors`` float32 tensors of equal size (plus a bias-sized one each), built once in each
library with the same values. Rows: ``kiln.save`` to a ``.pt`` path (PyTorch's zip format,
``runtime/torch_checkpoint_writer.py``) and to a ``.npz`` path (kiln's format), ``torch.save``; then ``kiln.load`` of
each of kiln's files, ``torch.load`` of torch's file and of kiln's ``.pt`` (``weights_only=True``). Each row is the
median over ``--repeats`` rounds, the rows interleaved within a round (the saves in turn first), with its throughput
and its ratio to the torch row of its kind. kiln's saves are atomic (temporary file, fsync, rename), torch.save's are not: the fsync is in
kiln's time. Thread pools are pinned before NumPy loads.
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
    parser.add_argument("--megabytes", type=float, default=100.0, help="the state dict's size")
    parser.add_argument("--tensors", type=int, default=20, help="weight tensors it holds (each with a bias)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, each timing every row")
    return parser.parse_args(argv)


def state_dicts(megabytes: float, tensors: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same state dict as kiln tensors and as torch tensors."""
    import torch

    import kiln

    rows = max(1, int(megabytes * 2**20 / 4 / tensors / 1024))
    rng = np.random.default_rng(0)
    arrays = {}
    for index in range(tensors):
        arrays[f"layers.{index}.weight"] = rng.standard_normal((rows, 1024), dtype=np.float32)
        arrays[f"layers.{index}.bias"] = rng.standard_normal(rows, dtype=np.float32)
    return ({name: kiln.tensor(array) for name, array in arrays.items()},
            {name: torch.from_numpy(array.copy()) for name, array in arrays.items()})


def rows(folder: str, ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, tuple[str, Callable[[], Any]]]:
    """Row name -> (the torch row it is compared with, the timed call). Saves come first: the loads read their files."""
    import torch

    import kiln

    path = lambda name: os.path.join(folder, name)  # noqa: E731
    return {
        "torch.save": ("torch.save", lambda: torch.save(theirs, path("torch.pt"))),
        "kiln.save .pt (torch format)": ("torch.save", lambda: kiln.save(ours, path("kiln.pt"))),
        "kiln.save .npz (kiln format)": ("torch.save", lambda: kiln.save(ours, path("kiln.npz"))),
        "torch.load torch's file": ("torch.load torch's file", lambda: torch.load(path("torch.pt"), weights_only=True)),
        "torch.load kiln's .pt": ("torch.load torch's file", lambda: torch.load(path("kiln.pt"), weights_only=True)),
        "kiln.load kiln's .pt": ("torch.load torch's file", lambda: kiln.load(path("kiln.pt"))),
        "kiln.load kiln's .npz": ("torch.load torch's file", lambda: kiln.load(path("kiln.npz"))),
        "kiln.load torch's file": ("torch.load torch's file", lambda: kiln.load(path("torch.pt"))),
    }


def measure(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, str], float]:
    """Median seconds per row, the rows interleaved in each of ``args.repeats`` rounds; each row's torch peer; the
    state dict's megabytes."""
    ours, theirs = state_dicts(args.megabytes, args.tensors)
    megabytes = sum(tensor.numel() * 4 for tensor in theirs.values()) / 2**20
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        table = rows(folder, ours, theirs)
        saves = [name for name in table if ".save" in name]
        loads = [name for name in table if ".save" not in name]
        for round_ in range(args.repeats):
            turn = round_ % len(saves)  # each round starts with another save (the page cache's writeback favours none)
            for name in saves[turn:] + saves[:turn] + loads:
                start = time.perf_counter()
                table[name][1]()
                times.setdefault(name, []).append(time.perf_counter() - start)
        peers = {name: peer for name, (peer, _) in table.items()}
    return {name: statistics.median(times[name]) for name in table}, peers, megabytes


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    medians, peers, megabytes = measure(args)
    print(f"{'row':32} {'seconds':>9} {'MB/s':>8} {'/torch':>7}   ({megabytes:.1f} MB state dict, {args.tensors} tensors)")
    for name, seconds in medians.items():
        print(f"{name:32} {seconds:9.4f} {megabytes / seconds:8.0f} {seconds / medians[peers[name]]:7.2f}")


if __name__ == "__main__":
    sys.exit(main())
