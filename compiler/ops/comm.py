"""The ``comm`` dialect: collectives and point-to-point transfers between ranks.

```
%bucket0.sum = "comm.allreduce"(%bucket0) {op = "mean", world_size = 2} : (tensor<1610xf32>) -> tensor<1610xf32>
%h.sent = "comm.send"(%h) {peer = 1, tag = 0} : (tensor<Nx64xf32>) -> tensor<Nx64xf32>
%h = "comm.recv"() {peer = 0, tag = 0, shape = ["N", 64], dtype = f32} : () -> tensor<Nx64xf32>
%w = "comm.broadcast"(%w) {root = 0} : (tensor<64x32xf32>) -> tensor<64x32xf32>
%x.all = "comm.replicate"(%x) {world_size = 2} : (tensor<Nx64xf32>) -> tensor<Nx64xf32>
```

Every rank runs its own graph; the ops of one collective (or of one
send/recv pair) must come in the same order on every rank that takes part,
which the passes that insert them guarantee. ``comm.send`` returns its operand
unchanged, so the send is an ordinary value the memory planner orders and
keeps alive. None of these ops is pure: dead-code elimination and CSE must
never drop or merge a transfer on one rank that its peer still waits for.
``comm.replicate`` moves nothing forward (it is pure); its VJP is an allreduce.
The runtime binds them to MPI or NCCL (``kiln.runtime.distributed``).
"""

from __future__ import annotations

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, Dim, TensorType
from kiln.compiler.ops.registry import OPS, register_op

REDUCTIONS = ("sum", "mean", "max", "min")


@register_op("comm.allreduce", op="sum", world_size=0)
def allreduce_shape(x: TensorType, *, op: str, world_size: int) -> TensorType:
    """Reduce ``x`` elementwise over all ranks (``mean`` = sum / ranks); every rank gets the result.

    ``world_size`` (0: any) is the rank count the graph was built for; the runtime checks it.
    """
    if op not in REDUCTIONS:
        raise ShapeError(f"comm.allreduce: op must be one of {', '.join(REDUCTIONS)}, got {op!r}")
    if op == "mean" and not x.dtype.is_float:
        raise ShapeError(f"comm.allreduce: op='mean' needs a float buffer, got {x}")
    return x


@register_op("comm.broadcast", traits={"non_differentiable"}, root=0)
def broadcast_shape(x: TensorType, *, root: int) -> TensorType:
    """Every rank gets rank ``root``'s ``x`` (the others' operand only gives the type)."""
    _check_rank("comm.broadcast", "root", root)
    return x


@register_op("comm.send", traits={"non_differentiable"}, peer=0, tag=0)
def send_shape(x: TensorType, *, peer: int, tag: int) -> TensorType:
    """Send ``x`` to rank ``peer`` under ``tag``; returns ``x`` unchanged (the send is ordered like a value)."""
    _check_rank("comm.send", "peer", peer)
    return x


@register_op("comm.recv", traits={"non_differentiable"}, peer=0, tag=0, shape=(), dtype=DType.f32)
def recv_shape(*, peer: int, tag: int, shape: tuple[Dim, ...], dtype: DType) -> TensorType:
    """Receive from rank ``peer`` under ``tag`` a tensor of ``shape`` and ``dtype`` (symbolic dims bind from the graph's inputs)."""
    _check_rank("comm.recv", "peer", peer)
    return TensorType(tuple(shape), DType.of(dtype))


@register_op("comm.replicate", world_size=0)
def replicate_shape(x: TensorType, *, world_size: int) -> TensorType:
    """Identity forward; the VJP sums the cotangent over ranks (Megatron's ``f``, before a column-split layer)."""
    return x


def _check_rank(op: str, attr: str, rank: int) -> None:
    if not isinstance(rank, int) or rank < 0:
        raise ShapeError(f"{op}: {attr} must be a rank number >= 0, got {rank!r}")


for _name in ("comm.allreduce", "comm.broadcast", "comm.send", "comm.recv"):
    # register_op marks every op pure; a transfer has an effect on another rank, so it must not be dropped or merged
    OPS[_name].traits = OPS[_name].traits - {"pure"}
