"""Kernels of the ``comm`` dialect: each calls the current communicator (``kiln.distributed.init``).

``comm_kernels(result)`` builds them for a backend: ``result`` brings a
communicator's result into the backend's arrays. NumPy's take ``to_host``
(an NCCL communicator gives CuPy arrays); the CuPy backend's, under NCCL,
pass device arrays through untouched (``backends/cupy/lowering.py``).
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.backends.numpy.lowering import NUMPY
from kiln.compiler.ir.types import DType
from kiln.runtime.distributed.communicator import current, to_host

COMM_OPS = ("comm.allreduce", "comm.broadcast", "comm.send", "comm.recv")
"""The ops that move data between ranks (``comm.replicate`` is the identity forward)."""


def comm_kernels(result: Callable[[Any], Any]) -> dict[str, Callable[..., Any]]:
    """Op name -> kernel, each result through ``result``."""

    def allreduce(x: Any, *, op: str, world_size: int) -> Any:
        return result(current(world_size).allreduce(x, op))

    def broadcast(x: Any, *, root: int) -> Any:
        return result(current().broadcast(x, root))

    def send(x: Any, *, peer: int, tag: int) -> Any:
        current().send(x, peer, tag)
        return x  # the op returns its operand: the send is ordered like any value

    def recv(*, peer: int, tag: int, shape: tuple[int, ...], dtype: DType) -> Any:
        return result(current().recv(tuple(shape), DType.of(dtype).numpy, peer, tag))

    return dict(zip(COMM_OPS, (allreduce, broadcast, send, recv)))


for _name, _kernel in comm_kernels(to_host).items():
    NUMPY.register(_name)(_kernel)


@NUMPY.register("comm.replicate")
def replicate(x: Any, *, world_size: int) -> Any:
    return x  # identity forward; only its VJP communicates
