"""NumPy kernels of the ``comm`` dialect: each calls the current communicator (``kiln.distributed.init``).

The same kernels serve CuPy arrays when the communicator is NCCL's.
"""

from __future__ import annotations

from typing import Any

from kiln.backends.numpy.lowering import NUMPY
from kiln.compiler.ir.types import DType
from kiln.runtime.distributed.communicator import current


@NUMPY.register("comm.allreduce")
def allreduce(x: Any, *, op: str, world_size: int) -> Any:
    return current(world_size).allreduce(x, op)


@NUMPY.register("comm.broadcast")
def broadcast(x: Any, *, root: int) -> Any:
    return current().broadcast(x, root)


@NUMPY.register("comm.send")
def send(x: Any, *, peer: int, tag: int) -> Any:
    current().send(x, peer, tag)
    return x  # the op returns its operand: the send is ordered like any value


@NUMPY.register("comm.recv")
def recv(*, peer: int, tag: int, shape: tuple[int, ...], dtype: DType) -> Any:
    return current().recv(tuple(shape), DType.of(dtype).numpy, peer, tag)


@NUMPY.register("comm.replicate")
def replicate(x: Any, *, world_size: int) -> Any:
    return x  # identity forward; only its VJP communicates
