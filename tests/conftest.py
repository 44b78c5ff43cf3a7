"""Shared test setup: the tests folder is importable (``from oracles import require``); BLAS pools pinned."""

from __future__ import annotations

import os
import sys

# On 2-core machines BLAS thread pools fight the test workers; pin them before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
