"""What ``backward()``'s version check (``runtime/saved_versions.py``) costs an eager training step.

    python benchmarks/version_check.py

An MLP step with plain and with in-place ReLUs (whose writes make the check walk the saved values): the check alone
per backward, and the median step with the check on and off, in alternating rounds. Pin BLAS threads
(OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1) for steady numbers.
"""

from __future__ import annotations

import statistics
import time
import timeit

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
import kiln.runtime.eager_backward as eager_backward
from kiln.runtime.saved_versions import check_saved_versions


def _workload(in_place: bool):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(inplace=in_place), nn.Linear(128, 64), nn.ReLU(inplace=in_place),
                          nn.Linear(64, 10))
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = kiln.tensor(np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32))
    y = kiln.tensor(np.random.default_rng(1).integers(0, 10, 32))

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return model, x, y, step


def _median_step(step, steps: int = 100) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    for in_place in (False, True):
        model, x, y, step = _workload(in_place)
        for _ in range(10):
            step()
        loss = F.cross_entropy(model(x), y)
        chain = eager_backward.EagerChain([loss.value], None)
        alone = timeit.timeit(lambda: check_saved_versions(chain), number=2000) / 2000
        rounds: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(5):
            eager_backward.check_saved_versions = check_saved_versions
            rounds["on"].append(_median_step(step))
            eager_backward.check_saved_versions = lambda chain: None
            rounds["off"].append(_median_step(step))
        eager_backward.check_saved_versions = check_saved_versions
        on, off = (statistics.median(rounds[k]) * 1e6 for k in ("on", "off"))
        print(f"ReLU(inplace={in_place}): check alone {alone * 1e6:.1f} us per backward; step {on:.0f} us with the "
              f"check, {off:.0f} us without")


if __name__ == "__main__":
    main()
