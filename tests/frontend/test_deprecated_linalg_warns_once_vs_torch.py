"""``torch.cholesky`` and ``torch.triangular_solve`` (and their Tensor methods) warn torch 2.13's deprecation once per
process (``TORCH_WARN_ONCE``: not again, even under ``simplefilter("always")``); kiln was silent. Run in a fresh
interpreter each, since the first call of the whole process is the one that warns."""

from __future__ import annotations

import subprocess
import sys

import pytest

from oracles import require_torch

PROGRAM = """
import warnings
import numpy as np
import {lib} as torch
A = torch.tensor(np.array([[4.0, 1.0], [1.0, 3.0]]))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(2):
        torch.cholesky(A); A.cholesky(upper=True)
        torch.triangular_solve(A, A, upper=False); A.triangular_solve(A)
        torch.linalg.cholesky(A); torch.linalg.solve_triangular(A, A, upper=True)
for w in caught:
    print(repr((w.category.__name__, str(w.message).split(" (Triggered internally")[0], w.lineno)))
"""


def _warnings(lib):
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(lib=lib)], capture_output=True, text=True, timeout=120,
                          env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_deprecated_cholesky_and_triangular_solve_warn_once_as_torch():
    require_torch()
    theirs = _warnings("torch")
    assert len(theirs) == 2
    assert _warnings("kiln") == theirs
