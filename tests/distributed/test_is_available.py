"""``kiln.distributed.is_available()`` as ``torch.distributed.is_available()``: whether distributed mode can run here
(mpi4py installed), answered without importing MPI, so ``dist.is_available() and dist.is_initialized()`` guards
single-process code as in PyTorch scripts."""

from __future__ import annotations

import importlib.util
import sys

import kiln.distributed as dist
from oracles import require


def test_available_where_mpi4py_is_installed_without_importing_mpi():
    require("mpi4py")
    already = "mpi4py.MPI" in sys.modules
    assert dist.is_available() is True
    assert not dist.is_initialized()
    assert ("mpi4py.MPI" in sys.modules) == already


def test_not_available_without_mpi4py(monkeypatch):
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "mpi4py" else found(name, *args))
    assert dist.is_available() is False
