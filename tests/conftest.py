"""Shared test setup: the tests folder is importable (``from oracles import require``); BLAS pools pinned."""

from __future__ import annotations

import os
import sys

# On 2-core machines BLAS thread pools fight the test workers; pin them before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402  (after the pins: it may load numpy)


@pytest.fixture
def float64_default():
    """Both libraries' default float dtype float64 for the test (a script's ``torch.set_default_dtype(torch.float64)``;
    PyTorch also keeps NAdam's ``mu_product`` in it), restored after; yields torch."""
    from oracles import require_torch

    import kiln

    torch = require_torch()
    saved = kiln.get_default_dtype(), torch.get_default_dtype()
    kiln.set_default_dtype(kiln.float64)
    torch.set_default_dtype(torch.float64)
    yield torch
    kiln.set_default_dtype(saved[0])
    torch.set_default_dtype(saved[1])


@pytest.fixture(params=["float32", "float64"])
def default_dtype(request):
    """Each default float dtype in turn, set in both libraries for the test and restored after; yields its name."""
    from oracles import require_torch

    import kiln

    torch = require_torch()
    saved = kiln.get_default_dtype(), torch.get_default_dtype()
    kiln.set_default_dtype(getattr(kiln, request.param))
    torch.set_default_dtype(getattr(torch, request.param))
    yield request.param
    kiln.set_default_dtype(saved[0])
    torch.set_default_dtype(saved[1])


@pytest.fixture(autouse=True)
def torch_validates_distributions():
    """torch's distributions validate their arguments, as by default: the first ``torch.compile`` in a process turns
    that off for good (``torch/_dynamo/eval_frame.py`` calls ``Distribution.set_default_validate_args(False)``), so a
    test comparing kiln's refusals with torch's failed when a worker had run a ``torch.compile`` test before it."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "distributions"):
        torch.distributions.Distribution.set_default_validate_args(True)
    yield
