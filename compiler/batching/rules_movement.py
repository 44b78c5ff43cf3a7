"""Batching rules of the movement ops: the per-example layout, with the batch axis kept whole in front.

Every rule here moves the op's axes one further along and leaves axis 0 alone:
``transpose(perm) -> transpose((0,) + perm + 1)``, ``slice(axis) -> slice(axis + 1)``.
"""

from __future__ import annotations

from kiln.compiler.batching.rules import Batched, aligned, batching_rule, shifted, shifted_axis
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value


@batching_rule("tensor.reshape")
def reshape_batch(b: Builder, op: Op, x: Batched) -> Value:
    # each example to the per-example result's shape (its -1 already resolved)
    return b.reshape(x.values[0], shape=(x.size,) + op.results[0].type.shape)


@batching_rule("tensor.transpose")
def transpose_batch(b: Builder, op: Op, x: Batched) -> Value:
    perm = op.attrs["perm"] if op.attrs["perm"] is not None else tuple(reversed(range(x.rank(0))))
    return b.transpose(x.values[0], perm=(0,) + tuple(axis + 1 for axis in perm))


@batching_rule("tensor.slice")
def slice_batch(b: Builder, op: Op, x: Batched) -> Value:
    return b.slice(x.values[0], **{**op.attrs, "axis": shifted_axis(op.attrs["axis"], x.rank(0))})


@batching_rule("tensor.concat")
def concat_batch(b: Builder, op: Op, x: Batched) -> Value:
    # every piece needs the batch axis: the unbatched ones are repeated along it
    pieces = [x.materialized(b, index) for index in range(len(x.values))]
    return b.concat(*pieces, axis=shifted_axis(op.attrs["axis"], x.rank(0)))


@batching_rule("tensor.pad")
def pad_batch(b: Builder, op: Op, x: Batched) -> Value:
    low, high, interior = (tuple(op.attrs[key]) for key in ("low", "high", "interior"))
    return b.pad(x.values[0], low=(0,) + low, high=(0,) + high, interior=(0,) + interior, value=op.attrs["value"])


@batching_rule("tensor.broadcast_to")
def broadcast_to_batch(b: Builder, op: Op, x: Batched) -> Value:
    shape = tuple(op.attrs["shape"])
    return b.broadcast_to(aligned(b, x.values[0], x.rank(0), len(shape)), shape=(x.size,) + shape)


@batching_rule("tensor.expand_dims")
def expand_dims_batch(b: Builder, op: Op, x: Batched) -> Value:
    return b.expand_dims(x.values[0], axes=shifted(op.attrs["axes"], op.results[0].type.rank))


@batching_rule("tensor.squeeze")
def squeeze_batch(b: Builder, op: Op, x: Batched) -> Value:
    return b.squeeze(x.values[0], axes=shifted(op.attrs["axes"], x.rank(0)))
