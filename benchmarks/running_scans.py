"""cummax / cummin / logcumsumexp: the log-depth scans kiln used to trace (the "before", kept here as the baseline)
against the linear-time IR ops (``tensor.cumargmax``/``cumargmin``/``logcumsumexp``), and NumPy's ``accumulate``
as the floor, in one run on the NumPy backend.

    python benchmarks/running_scans.py                      # n = 1024 and 65536, 4 lanes, 1 thread
    python benchmarks/running_scans.py --sizes 256,4096 --rows 16 --repeats 20

Printed per size and scan: the median time of the compiled forward (values), of forward + gradient (``kiln.grad`` of
``sum(scan(x) * w)``), and the ratios before / after. Shapes are static (``batch_dim=None``): the old scans needed a
static scanned length.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024,65536", help="comma-separated scan lengths")
    parser.add_argument("--rows", type=int, default=4, help="lanes scanned at once")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    return parser.parse_args(argv)


def log_depth_extreme(x, wins):
    """The old cummax/cummin (values): a Hillis-Steele scan over (key, index) pairs, then a gather."""
    from kiln.frontend.tensor import apply

    size, step = x.shape[1], 1
    index = apply("tensor.broadcast_to", apply("tensor.constant", value=__import__("numpy").arange(size)), shape=x.shape)
    key = x
    while step < size:
        earlier_key, earlier_index = earlier(key, step), earlier(index, step)
        later = wins(key, earlier_key) | key.isnan()
        key, index = apply("tensor.where", later, key, earlier_key), apply("tensor.where", later, index, earlier_index)
        step *= 2
    return x.gather(1, index)


def log_depth_logcumsumexp(x):
    """The old logcumsumexp: a Hillis-Steele scan of logaddexp steps."""
    import numpy as np
    from kiln.frontend.tensor import apply

    size, total, step = x.shape[1], x, 1
    while step < size:
        reached = apply("tensor.constant", value=np.arange(size) >= step)
        total = apply("tensor.where", reached, total.logaddexp(earlier(total, step)), total)
        step *= 2
    return total


def earlier(x, step: int):
    from kiln.frontend.functional_nn import cat

    return cat([x.narrow(1, 0, step), x.narrow(1, 0, x.shape[1] - step)], 1)


def scans():
    """name -> (before, after, NumPy's accumulate) on ``(rows, n)`` along dim 1."""
    import numpy as np

    return {
        "cummax": (lambda x: log_depth_extreme(x, lambda a, b: a >= b), lambda x: x.cummax(1).values, lambda x: np.maximum.accumulate(x, 1)),
        "cummin": (lambda x: log_depth_extreme(x, lambda a, b: a <= b), lambda x: x.cummin(1).values, lambda x: np.minimum.accumulate(x, 1)),
        "logcumsumexp": (log_depth_logcumsumexp, lambda x: x.logcumsumexp(1), lambda x: np.logaddexp.accumulate(x, 1)),
    }


def median_seconds(run, *arrays, repeats: int) -> float:
    run(*arrays)  # warm (compiles on the first call)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*arrays)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(size: int, rows: int, repeats: int) -> None:
    import numpy as np

    import kiln

    rng = np.random.default_rng(size)
    x, w = rng.standard_normal((rows, size)) * 10, rng.standard_normal((rows, size))
    for name, (before, after, floor) in scans().items():
        row = {"numpy accumulate": median_seconds(floor, x, repeats=repeats)}
        for label, scan in (("before", before), ("after", after)):
            forward = kiln.compile(scan, batch_dim=None)
            gradient = kiln.compile(lambda x, w, scan=scan: kiln.grad(lambda t: (scan(t) * w).sum())(x), batch_dim=None)
            np.testing.assert_allclose(forward(x), floor(x), rtol=1e-12)
            row[f"{label} forward"] = median_seconds(forward, x, repeats=repeats)
            row[f"{label} forward+grad"] = median_seconds(gradient, x, w, repeats=repeats)
        ratios = {kind: row[f"before {kind}"] / row[f"after {kind}"] for kind in ("forward", "forward+grad")}
        cells = "  ".join(f"{key} {value * 1e3:8.3f} ms" for key, value in row.items())
        print(f"n={size:6d} {name:13s} {cells}  before/after: forward {ratios['forward']:.1f}x, "
              f"forward+grad {ratios['forward+grad']:.1f}x", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    for size in (int(s) for s in args.sizes.split(",")):
        measure(size, args.rows, args.repeats)


if __name__ == "__main__":
    main()
