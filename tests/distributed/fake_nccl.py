"""A stand-in for ``cupy.cuda.nccl`` over MPI, on the NumPy stand-in for CuPy, so the NCCL path runs without GPUs.

``install()`` puts the fake ``cupy`` (``tests/backends_cupy/fake_cupy.py``) into ``sys.modules`` with
``cupy.cuda.nccl``, ``Device`` and ``get_current_stream``. The fake NCCL takes what the real one takes,
raw addresses, element counts and NCCL's dtype and op enums, and carries out each call with the matching
MPI buffer call on the memory at those addresses: a wrong pointer, count, dtype or op gives wrong numbers
here as it would on GPUs. ``NcclCommunicator`` checks that every rank passed the same unique id (rank 0's
broadcast) and a rank and size that match MPI's. ``CALLS`` counts the calls by name.

```python
fake_nccl.install()                  # before kiln.distributed.init("nccl")
comm = kiln.distributed.init("nccl")
```
"""

from __future__ import annotations

import collections
import ctypes
import os
import sys
import types
from typing import Any

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "backends_cupy"))
import fake_cupy  # noqa: E402

DTYPES = {0: np.int8, 1: np.uint8, 2: np.int32, 3: np.uint32, 4: np.int64, 5: np.uint64, 6: np.float16, 7: np.float32, 8: np.float64}
"""NCCL's ``ncclDataType_t`` values (nccl.h)."""
OPS = {0: MPI.SUM, 1: MPI.PROD, 2: MPI.MAX, 3: MPI.MIN}
"""NCCL's ``ncclRedOp_t`` values: sum, prod, max, min."""
CALLS: collections.Counter[str] = collections.Counter()


def _view(pointer: int, count: int, datatype: int) -> np.ndarray:
    """The ``count`` elements of NCCL type ``datatype`` at address ``pointer``, writable, without a copy."""
    assert isinstance(pointer, int) and pointer, f"NCCL needs a device address, got {pointer!r}"
    dtype = np.dtype(DTYPES[datatype])
    return np.frombuffer((ctypes.c_char * (count * dtype.itemsize)).from_address(pointer), dtype=dtype, count=count)


def get_unique_id() -> tuple[int, ...]:
    return tuple(int(v) for v in np.random.default_rng().integers(-128, 128, 128))  # ncclUniqueId: 128 chars


class NcclCommunicator:
    def __init__(self, ndev: int, comm_id: tuple[int, ...], rank: int):
        world = MPI.COMM_WORLD
        ids = world.allgather(tuple(comm_id))
        assert len(comm_id) == 128 and all(i == ids[0] for i in ids), "ranks passed different NCCL unique ids"
        assert (ndev, rank) == (world.Get_size(), world.Get_rank()), f"NcclCommunicator({ndev}, rank={rank}) on MPI rank {world.Get_rank()}"
        self.world = world

    def allReduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int, stream: int) -> None:
        CALLS["allReduce"] += 1
        send = MPI.IN_PLACE if sendbuf == recvbuf else _view(sendbuf, count, datatype)
        self.world.Allreduce(send, _view(recvbuf, count, datatype), op=OPS[op])

    def bcast(self, buff: int, count: int, datatype: int, root: int, stream: int) -> None:
        CALLS["bcast"] += 1
        self.world.Bcast(_view(buff, count, datatype), root=root)

    def send(self, sendbuf: int, count: int, datatype: int, peer: int, stream: int) -> None:
        CALLS["send"] += 1
        self.world.Send(_view(sendbuf, count, datatype), dest=peer)

    def recv(self, recvbuf: int, count: int, datatype: int, peer: int, stream: int) -> None:
        CALLS["recv"] += 1
        self.world.Recv(_view(recvbuf, count, datatype), source=peer)


def _nccl_module() -> types.ModuleType:
    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.get_unique_id, nccl.NcclCommunicator = get_unique_id, NcclCommunicator
    for value, dtype in DTYPES.items():
        setattr(nccl, f"NCCL_{np.dtype(dtype).name.upper()}", value)
    nccl.NCCL_SUM, nccl.NCCL_PROD, nccl.NCCL_MAX, nccl.NCCL_MIN = 0, 1, 2, 3
    return nccl


class _Device:
    """One device per process (each rank has its GPU): ``Device(rank % count)`` must be device 0."""

    def __init__(self, index: int):
        assert index == 0, f"Device({index}) but this process has one device"

    def use(self) -> None:
        pass


class _SysModules:
    """What ``fake_cupy.install`` needs of pytest's monkeypatch, for a script outside pytest."""

    @staticmethod
    def setitem(mapping: dict[str, Any], key: str, value: Any) -> None:
        mapping[key] = value


def install(patch: Any = _SysModules()) -> types.ModuleType:
    """The fake ``cupy`` with NCCL, in ``sys.modules``; returns it. ``patch``: pytest's ``monkeypatch`` in a test (the
    modules go again after it), else they stay for the script."""
    cupy = fake_cupy.install(patch)
    nccl = _nccl_module()
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1), nccl=nccl, Device=_Device,
                                      get_current_stream=lambda: types.SimpleNamespace(ptr=0))
    patch.setitem(sys.modules, "cupy.cuda", cupy.cuda)
    patch.setitem(sys.modules, "cupy.cuda.nccl", nccl)
    return cupy
