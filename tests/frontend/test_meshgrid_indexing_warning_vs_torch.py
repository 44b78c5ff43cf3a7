"""``torch.meshgrid`` without ``indexing`` (RAFT's ``CorrBlock`` writes ``torch.meshgrid(dy, dx)``) means ``"ij"`` and
warns torch 2.13's UserWarning once per process (``TORCH_WARN_ONCE``: not again, even under
``simplefilter("always")``); kiln was silent, so a ``filterwarnings`` or ``pytest.warns`` written against torch failed.
Run in a fresh interpreter each, since the first call of the whole process is the one that warns."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from oracles import require_torch

PROGRAM = """
import warnings
import {lib} as torch
x, y = torch.arange(3.0), torch.arange(2.0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    torch.meshgrid(x, y, indexing="ij"); torch.meshgrid(x, y, indexing="xy")
    for _ in range(2):
        torch.meshgrid(x, y); torch.meshgrid([x, y]); torch.meshgrid(x)
for w in caught:
    print(repr((w.category.__name__, str(w.message).split(" (Triggered internally")[0])))
print(repr([g.tolist() for g in torch.meshgrid(x, y)]))
"""


def _output(lib):
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(lib=lib)], capture_output=True, text=True, timeout=120,
                          env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_meshgrid_without_indexing_warns_once_and_means_ij_as_torch():
    require_torch()
    theirs = _output("torch")
    assert len(theirs) == 2 and "indexing argument" in theirs[0]
    assert _output("kiln") == theirs


def test_meshgrid_warning_names_the_users_line(recwarn):
    """kiln's warning points at the caller's line (torch's at its own ``functional.py``), whichever call is first."""
    import warnings

    import kiln
    from kiln.frontend import warn_once

    warn_once._GIVEN.discard(kiln.frontend.torch_functions.MESHGRID_INDEXING_WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grids = kiln.meshgrid(kiln.arange(2.0), kiln.arange(3.0))
    assert [w.filename for w in caught] == [__file__]
    np.testing.assert_array_equal(grids[0].numpy(), [[0, 0, 0], [1, 1, 1]])
