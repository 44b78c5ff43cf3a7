"""The ``fake`` fixture: the NumPy stand-in for CuPy (fake_cupy.py) in ``sys.modules`` for one test, with the CuPy
table and the compiled-kernel cache emptied before and after (they hold whichever ``cupy`` was imported)."""

from __future__ import annotations

import pytest

import fake_cupy
from kiln.backends.cupy import launch
from kiln.backends.cupy.lowering import cupy_table


@pytest.fixture
def fake(monkeypatch):
    cupy_table.cache_clear()
    launch._KERNELS.clear()
    yield fake_cupy.install(monkeypatch)
    cupy_table.cache_clear()
    launch._KERNELS.clear()
