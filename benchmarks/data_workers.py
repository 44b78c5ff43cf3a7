"""``kiln.utils.data.DataLoader`` with worker processes against loading in the main process, on a dataset whose
``__getitem__`` burns about ``--ms`` milliseconds of pure Python per sample (a decode/augment stand-in).

    python benchmarks/data_workers.py                        # 2 ms a sample, batch 32, 320 samples, workers 0 and 2
    python benchmarks/data_workers.py --workers 0,1,2,4 --samples 640 --repeats 3
    python benchmarks/data_workers.py --torch                # torch's DataLoader on the same dataset, side by side

Printed: the load average (other processes share the cores: read the ratios against it), then per worker count
the median wall time of one full pass (worker start-up included, as a non-persistent
loader pays it every epoch), samples per second, and the speed-up over ``num_workers=0``. BLAS threads are pinned to
one; with more workers than cores the processes share the cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="0,2", help="comma-separated num_workers values")
    parser.add_argument("--ms", type=float, default=2.0, help="Python work per sample, milliseconds")
    parser.add_argument("--samples", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch", action="store_true", help="torch.utils.data.DataLoader on the same dataset, as the peer")
    return parser.parse_args(argv)


def spins_per_second() -> float:
    """How many iterations of the busy loop one core runs a second (the fastest of a few tries, so a busy machine
    does not shrink the work)."""
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        busy(200_000)
        best = max(best, 200_000 / (time.perf_counter() - start))
    return best


def busy(spins: int) -> int:
    total = 0
    for i in range(spins):
        total += i & 7
    return total


class BusySamples:
    """Sample ``i``: a (3, 32, 32) float32 image and a label, after ``spins`` iterations of interpreted Python (a fixed
    amount of work, about ``--ms`` on an idle core; a wall-clock wait would hide contention for the cores)."""

    def __init__(self, count: int, spins: int):
        self.count, self.spins = count, spins

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        busy(self.spins)
        return np.full((3, 32, 32), index % 255, np.float32), index % 10


def one_pass(loader) -> float:
    start = time.perf_counter()
    count = sum(int(labels.shape[0]) for _, labels in loader)
    elapsed = time.perf_counter() - start
    assert count == len(loader.dataset)
    return elapsed


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from kiln.utils.data import DataLoader

    dataset = BusySamples(args.samples, int(spins_per_second() * args.ms / 1000))
    print(f"{args.samples} samples x {args.ms} ms of Python, batch {args.batch_size}, {os.cpu_count()} cores, "
          f"median of {args.repeats} passes (machine load now: {os.getloadavg()[0]:.1f})")
    loaders = {"kiln": DataLoader}
    if args.torch:
        import torch.utils.data

        torch.set_num_threads(1)
        loaders["torch"] = torch.utils.data.DataLoader
    baseline = {}
    for workers in (int(w) for w in args.workers.split(",")):
        for name, make in loaders.items():
            times = [one_pass(make(dataset, batch_size=args.batch_size, num_workers=workers)) for _ in range(args.repeats)]
            seconds = statistics.median(times)
            baseline.setdefault(name, seconds)
            print(f"{name:5s} num_workers={workers}: {seconds:.3f} s a pass (fastest {min(times):.3f}), "
                  f"{args.samples / seconds:6.0f} samples/s, x{baseline[name] / seconds:.2f} vs its first row")

if __name__ == "__main__":
    main()
