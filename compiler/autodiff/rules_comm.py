"""VJP rules of the ``comm`` ops, for SPMD graphs where every rank computes the same (replicated) loss.

Tensor parallelism (Megatron-LM's ``f`` and ``g``): a row-split layer ends in
``z = allreduce_sum(partial)``; the loss downstream is one replicated copy, so
each rank's ``partial`` reaches it with the cotangent unchanged. A
column-split layer starts with ``comm.replicate(x)``: every rank's copy of
``x`` feeds a different shard, so the cotangent of ``x`` is the sum over ranks.
"""

from __future__ import annotations

from kiln.compiler.autodiff.rules import Cotangents, vjp_rule
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value


@vjp_rule("comm.allreduce")
def allreduce_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # z = sum_r x_r with a replicated loss: dL/dx_r = g;  z = mean_r x_r: dL/dx_r = g / ranks
    if op.attrs["op"] == "sum":
        return (g,)
    if op.attrs["op"] == "mean" and op.attrs["world_size"]:
        return (b.div(g, b.scalar_like(float(op.attrs["world_size"]), g)),)
    raise KilnError(f"comm.allreduce with op={op.attrs['op']!r} (world_size={op.attrs['world_size']}) has no VJP; differentiate sum, or mean with a world_size")


@vjp_rule("comm.replicate")
def replicate_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # x used by every rank: dL/dx = sum_r g_r
    return (b.op("comm.allreduce", g, op="sum", world_size=op.attrs["world_size"]),)
