"""Freed host memory stays with the process: a CNN step's temporaries stop faulting pages in on every step.

Page faults are counted (``getrusage``), not timed; each run is a fresh process, since malloc's settings are the
process's. Linux with glibc only (``mallopt``), which is what CI runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, resource
    import numpy as np
    import kiln, kiln.nn as nn, kiln.nn.functional as F
    from kiln.runtime.host_memory import keep_freed_host_memory

    kiln.manual_seed(0)
    model = nn.Sequential([nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10)])
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.01))
    rng = np.random.default_rng(0)
    x, y = rng.random((256, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 256)
    for _ in range(3):
        step(x, y)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step(x, y)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
    print(json.dumps({"kept": keep_freed_host_memory(), "faults_per_step": faults}))
    """
)


def _run(keep: str) -> dict:
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "KILN_KEEP_FREED_MEMORY": keep}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's; other platforms keep their malloc")
def test_a_training_step_stops_faulting_pages_in_once_freed_memory_is_kept():
    kept, default = _run("1"), _run("0")
    assert kept["kept"] and not default["kept"]
    assert default["faults_per_step"] > 100, default  # glibc's defaults hand the temporaries back every step
    assert kept["faults_per_step"] * 20 < default["faults_per_step"], (kept, default)
