"""Batching rules of ``tensor.take`` and ``tensor.scatter_add`` (each other's VJP).

With indices shared by every example the batch axis simply rides along. With
indices of their own, each example's gathered axis is stacked into one axis of
``size * n`` rows and example ``i``'s indices are offset by ``i * n`` (JAX's
gather batching does the same with an iota), so one take or scatter serves all.
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.batching.rules import Batched, BatchingError, batching_rule, moved_axis
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value
from kiln.compiler.ir.types import Dim, normalize_axis


def offset_indices(b: Builder, op: Op, indices: Value, rows: Dim, size: Dim) -> Value:
    """Example ``i``'s indices (negatives wrapped) plus ``i * rows``: rows of the stacked ``(size * rows, ...)`` operand."""
    if not isinstance(rows, int) or not isinstance(size, int):
        raise BatchingError(f"kiln.vmap batches {op.name} with per-example indices only over static sizes, got batch size "
                            f"{size} and {rows} rows (from {op.location}); give the batched inputs static shapes")
    zero = b.constant(0, indices.type.dtype)
    wrapped = b.where(b.less(indices, zero), b.add(indices, b.constant(rows, indices.type.dtype)), indices)
    offsets = (np.arange(size) * rows).reshape((size,) + (1,) * (indices.type.rank - 1))
    return b.add(wrapped, b.constant(offsets, indices.type.dtype))


@batching_rule("tensor.take")
def take_batch(b: Builder, op: Op, x: Batched) -> Value:
    (data, indices), axis = x.values, normalize_axis(op.attrs["axis"], x.rank(0))
    if not x.batched[1]:
        return b.take(data, indices, axis=axis + 1)
    if not x.batched[0]:
        return moved_axis(b, b.take(data, indices, axis=axis), axis, 0)  # (pre, B, I, post) -> (B, pre, I, post)
    rows = x.op.operands[0].type.shape[axis]
    front = moved_axis(b, data, axis + 1, 1)  # (B, n, pre, post)
    stacked = b.reshape(front, shape=(-1,) + front.type.shape[2:])  # (B*n, pre, post)
    taken = b.take(stacked, offset_indices(b, op, indices, rows, x.size), axis=0)  # (B, I, pre, post)
    picked = x.rank(1)
    pre = tuple(range(1 + picked, 1 + picked + axis))
    perm = (0,) + pre + tuple(range(1, 1 + picked)) + tuple(range(1 + picked + axis, taken.type.rank))
    return b.transpose(taken, perm=perm)  # (B, pre, I, post)


@batching_rule("tensor.scatter_add")
def scatter_add_batch(b: Builder, op: Op, x: Batched) -> Value:
    shape = tuple(op.attrs["shape"])
    axis, updates, indices = normalize_axis(op.attrs["axis"], len(shape)), x.materialized(b, 0), x.values[1]
    if not x.batched[1]:
        return b.scatter_add(updates, indices, axis=axis + 1, shape=(x.size,) + shape)
    picked, rows, rest = x.rank(1), shape[axis], shape[:axis] + shape[axis + 1 :]
    perm = (0,) + tuple(range(1 + axis, 1 + axis + picked)) + tuple(range(1, 1 + axis))
    moved = b.transpose(updates, perm=perm + tuple(range(1 + axis + picked, updates.type.rank)))  # (B, I, pre, post)
    offsets = offset_indices(b, op, indices, rows, x.size)
    summed = b.scatter_add(moved, offsets, axis=0, shape=(x.size * rows,) + rest)  # (B*n, pre, post)
    return moved_axis(b, b.reshape(summed, shape=(x.size, rows) + rest), 1, axis + 1)  # (B, pre, n, post)
