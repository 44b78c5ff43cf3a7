"""Communicators: MPI (mpi4py, buffer-based) and NCCL (CuPy), and the current one the ``comm`` ops use.

Every rank calls ``init()``; the ``comm`` ops' kernels then reach the
communicator through ``current()``. MPI moves NumPy arrays with the
buffer-based calls (``Allreduce``, ``Bcast``, ``Send``, ``Recv``), never the
pickling lowercase ones; NCCL moves CuPy arrays, its unique id broadcast over
MPI. mpi4py is imported only when a communicator is made.
"""

from __future__ import annotations

import importlib.util

import sys
import time
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.types import DType

_CURRENT: "Communicator | None" = None


class DistributedError(KilnError):
    """Distributed mode is missing, misconfigured, or the ranks disagree."""


class Communicator(Protocol):
    """What the ``comm`` ops need from a transport; ranks are ``0..size-1``."""

    rank: int
    size: int
    device_arrays: bool
    """Whether it moves device (CuPy) arrays as they are: NCCL does; MPI moves host buffers."""

    def allreduce(self, x: Any, op: str) -> Any: ...

    def broadcast(self, x: Any, root: int) -> Any: ...

    def send(self, x: Any, peer: int, tag: int) -> None: ...

    def recv(self, shape: tuple[int, ...], dtype: np.dtype, peer: int, tag: int) -> Any: ...

    def barrier(self) -> None: ...


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise DistributedError(
            f"distributed mode needs mpi4py ({error}); install it with `pip install 'kiln[distributed]'` (mpi4py and the MPICH "
            "runtime wheel), or `pip install mpi4py` against your cluster's MPI; launch with `mpiexec -n 2 python -m mpi4py script.py`"
        ) from None
    return MPI


class MPICommunicator:
    """MPI through mpi4py's buffer interface: arrays go to MPI as they are, without pickling."""

    device_arrays = False

    def __init__(self, comm: Any = None):
        """``comm``: an mpi4py communicator (default ``MPI.COMM_WORLD``), or any object with its buffer methods."""
        self.comm = comm if comm is not None else _import_mpi().COMM_WORLD
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()

    @cached_property
    def ops(self) -> dict[str, Any]:
        MPI = _import_mpi()
        return {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}

    def allreduce(self, x: np.ndarray, op: str) -> np.ndarray:
        send = np.asarray(x, order="C")  # not ascontiguousarray: it makes a 0-d array 1-d
        if is_half(send.dtype):  # MPI has no bfloat16 (nor, portably, float16): reduce in float32, round once
            return self.allreduce(send.astype(np.float32), op).astype(send.dtype)
        result = np.empty_like(send)
        self.comm.Allreduce(send, result, op=self.ops[op])
        if op == "mean":
            result /= result.dtype.type(self.size)
        return result

    def broadcast(self, x: np.ndarray, root: int) -> np.ndarray:
        buffer = np.array(x, order="C")  # a copy: the operand may be a graph input that must not change
        self.comm.Bcast(bits(buffer), root=root)
        return buffer

    def broadcast_into(self, x: np.ndarray, root: int) -> None:
        """Overwrite ``x`` (contiguous) with rank ``root``'s values, in place."""
        self.comm.Bcast(bits(x), root=root)

    def send(self, x: np.ndarray, peer: int, tag: int) -> None:
        self.comm.Send(bits(np.asarray(x, order="C")), dest=peer, tag=tag)

    def recv(self, shape: tuple[int, ...], dtype: np.dtype, peer: int, tag: int) -> np.ndarray:
        buffer = np.empty(shape, dtype)
        self.comm.Recv(bits(buffer), source=peer, tag=tag)
        return buffer

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def is_half(dtype: np.dtype) -> bool:
    return dtype == np.float16 or dtype == DType.bf16.numpy


def bits(array: np.ndarray) -> np.ndarray:
    """A half array as its 16-bit patterns (a view: writes land in ``array``), which any MPI moves as they are;
    other arrays unchanged. (mpi4py refuses ``ml_dtypes.bfloat16``'s buffer, and float16 needs an MPI extension.)"""
    return array.view(np.uint16) if is_half(array.dtype) else array


def node_rank(comm: Any) -> int:
    """This rank's index among the ranks on its node (MPI's shared-memory split): a rank takes its node's GPU of that
    index, whichever way ``mpiexec`` placed the ranks (``--map-by node`` puts world ranks 0, 2, 4, ... on the first
    node). A stand-in communicator without ``Split_type`` (one process) gives its world rank."""
    if not hasattr(comm, "Split_type"):
        return comm.Get_rank()
    node = comm.Split_type(_import_mpi().COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return node.Get_rank()
    finally:
        node.Free()


class NCCLCommunicator(MPICommunicator):
    """NCCL on CuPy arrays; MPI carries the NCCL unique id and the host-side control (``broadcast_into``, ``barrier``).

    Collectives take CuPy arrays and give CuPy arrays (a host operand is uploaded first); the NumPy backend's
    comm kernels bring results back with ``to_host``. Tested on a NumPy stand-in for CuPy and NCCL over MPI
    (``tests/distributed/fake_nccl.py``); the real NCCL needs a GPU per rank.
    """

    device_arrays = True

    def __init__(self, comm: Any = None):
        super().__init__(comm)
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as error:
            raise DistributedError(f"the NCCL backend needs CuPy with NCCL ({error}); install cupy-cuda12x, or use init('mpi')") from None
        if not getattr(nccl, "available", True):  # CuPy imports without the NCCL library, its calls then missing
            raise DistributedError("CuPy finds no NCCL library: pip install nvidia-nccl-cu12 (or -cu13, as your CuPy), or use init('mpi')")
        self.cupy, self.nccl = cupy, nccl
        cupy.cuda.Device(node_rank(self.comm) % cupy.cuda.runtime.getDeviceCount()).use()
        unique_id = np.array(nccl.get_unique_id() if self.rank == 0 else (0,) * 128, dtype=np.int64)
        self.comm.Bcast(unique_id, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, tuple(int(v) for v in unique_id), self.rank)
        self.nccl_ops = {"sum": nccl.NCCL_SUM, "mean": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}

    def _nccl_dtype(self, dtype: np.dtype) -> int:
        names = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64", "int32": "NCCL_INT32", "int64": "NCCL_INT64"}
        return getattr(self.nccl, names[np.dtype(dtype).name])

    def allreduce(self, x: Any, op: str) -> Any:
        send = self.cupy.asarray(x, order="C")
        result = self.cupy.empty_like(send)
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.allReduce(send.data.ptr, result.data.ptr, send.size, self._nccl_dtype(send.dtype), self.nccl_ops[op], stream)
        if op == "mean":
            result /= self.size
        return result

    def broadcast(self, x: Any, root: int) -> Any:
        buffer = self.cupy.array(x, order="C")
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.bcast(buffer.data.ptr, buffer.size, self._nccl_dtype(buffer.dtype), root, stream)
        return buffer

    def send(self, x: Any, peer: int, tag: int) -> None:
        send = self.cupy.asarray(x, order="C")
        self.nccl_comm.send(send.data.ptr, send.size, self._nccl_dtype(send.dtype), peer, self.cupy.cuda.get_current_stream().ptr)

    def recv(self, shape: tuple[int, ...], dtype: np.dtype, peer: int, tag: int) -> Any:
        buffer = self.cupy.empty(shape, dtype)
        self.nccl_comm.recv(buffer.data.ptr, buffer.size, self._nccl_dtype(buffer.dtype), peer, self.cupy.cuda.get_current_stream().ptr)
        return buffer


def init(backend: str = "mpi", comm: Any = None, abort_on_error: bool = True) -> Communicator:
    """Start distributed mode on ``MPI.COMM_WORLD`` (or ``comm``) and make it the current communicator.

    ``backend``: ``"mpi"`` (NumPy arrays) or ``"nccl"`` (CuPy arrays, one GPU per rank).
    ``abort_on_error``: an uncaught exception on any rank prints its traceback and aborts every rank,
    as ``python -m mpi4py`` does, so no rank waits forever for a peer that died.
    """
    global _CURRENT
    factories: dict[str, Callable[[Any], Communicator]] = {"mpi": MPICommunicator, "nccl": NCCLCommunicator}
    if backend not in factories:
        raise DistributedError(f"unknown distributed backend {backend!r}; use one of {', '.join(factories)}")
    _CURRENT = factories[backend](comm)
    if abort_on_error:
        _abort_on_uncaught_exception(_CURRENT)
    return _CURRENT


ABORT_GRACE_S = 1.0
"""How long a failing rank waits between writing its error and aborting the job: mpiexec forwards each rank's output
through its process manager, and an abort tears the job down at once, dropping what is still in flight (under load,
only the traceback's first line reached the terminal). Paid only by a job that is failing anyway."""


def _abort_on_uncaught_exception(communicator: Communicator) -> None:
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
        previous(kind, error, traceback)
        print(f"kiln.distributed: rank {communicator.rank} failed; aborting all {communicator.size} ranks", file=sys.stderr, flush=True)
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)
        getattr(communicator, "abort", lambda code: None)(1)

    sys.excepthook = hook


def use(communicator: Communicator) -> Communicator:
    """Make ``communicator`` (any object with the ``Communicator`` methods) the one the ``comm`` ops call."""
    global _CURRENT
    _CURRENT = communicator
    return communicator


@contextmanager
def using(communicator: Communicator) -> Iterator[Communicator]:
    """``communicator`` is the current one inside the block, so the comm ops of a step run on the communicator its
    wrapper or layers were given (``DataParallel(step, comm=...)``), whatever ``init``/``use`` set."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, communicator
    try:
        yield communicator
    finally:
        _CURRENT = previous


def current(world_size: int = 0) -> Communicator:
    """The communicator ``init`` set; ``world_size`` (when not 0) must match its size."""
    if _CURRENT is None:
        raise DistributedError(
            "this graph has comm ops but distributed mode is not started: call kiln.distributed.init() first on every rank "
            "(launch with `mpiexec -n 2 python -m mpi4py script.py`)"
        )
    if world_size and world_size != _CURRENT.size:
        raise DistributedError(
            f"the step was compiled for {world_size} ranks but runs on {_CURRENT.size}; compile it under the same mpiexec -n as it runs"
        )
    return _CURRENT


def is_initialized() -> bool:
    return _CURRENT is not None


def is_available() -> bool:
    """``torch.distributed.is_available()``: whether distributed mode can run here (mpi4py is installed), without
    importing it (``dist.is_available() and dist.is_initialized()`` guards single-process code)."""
    return importlib.util.find_spec("mpi4py") is not None


def shutdown() -> None:
    """Forget the current communicator (MPI itself finalizes at exit)."""
    global _CURRENT
    _CURRENT = None


def to_host(array: Any) -> np.ndarray:
    """A NumPy array from a communicator's result (NCCL's are CuPy arrays)."""
    return np.asarray(array.get() if hasattr(array, "__cuda_array_interface__") else array)


def broadcast_arrays(arrays: Sequence[np.ndarray], root: int = 0, comm: Communicator | None = None) -> None:
    """Overwrite each array in place with rank ``root``'s (parameters at the start: every rank starts alike)."""
    communicator = comm or current()
    for array in arrays:
        if array.flags.c_contiguous and hasattr(communicator, "broadcast_into"):
            communicator.broadcast_into(array, root)  # type: ignore[attr-defined]
        else:
            np.copyto(array, to_host(communicator.broadcast(array, root)))


def on_rank0(comm: Communicator, action: Callable[[], None], what: str) -> None:
    """Run ``action`` on rank 0; if it raised there every rank raises (rank 0 its own error), so no rank waits for it."""
    error: BaseException | None = None
    if comm.rank == 0:
        try:
            action()
        except Exception as caught:  # reported on every rank below
            error = caught
    failed = np.array([error is not None], dtype=np.int64)
    broadcast_arrays([failed], root=0, comm=comm)
    if error is not None:
        raise error
    if failed[0]:
        raise DistributedError(f"rank 0 could not {what}; its error says why (nothing was changed on this rank)")
