"""Batching rules of the ``nn`` composites that stay one op when batched.

Where a case does not fit one op (per-example layer-norm weights, a class-weighted
cross-entropy, attention operands of different ranks) a rule returns ``None`` and
the walk batches the op's decomposition instead. ``nn.layer_norm_grad``,
``nn.cross_entropy_grad``, ``nn.batch_norm``, ``nn.gelu``'s neighbours and the
other losses have no rule here at all: their decompositions are batched. ``tensor.random_uniform``
(``nn.dropout``'s draw) is here because dropout is its one use inside ``vmap``.
"""

from __future__ import annotations

from kiln.compiler.batching.rules import Batched, BatchingError, batching_rule, moved_axis
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value


@batching_rule("nn.layer_norm")
def layer_norm_batch(b: Builder, op: Op, x: Batched) -> Value | None:
    # normalizes trailing axes: a leading batch axis changes nothing while weight and bias are shared
    if x.batched[1] or x.batched[2]:
        return None
    return b.layer_norm(*x.values, **op.attrs)


@batching_rule("nn.cross_entropy")
def cross_entropy_batch(b: Builder, op: Op, x: Batched) -> Value | None:
    # per-example (N, C, d...) logits as (B, C, N, d...): the B*N*d samples' losses, then each example's reduction
    if len(x.values) > 2:
        return None  # a class weight: its mean divides by weighted counts, left to the decomposition
    logits, target = moved_axis(b, x.materialized(b, 0), 2, 1), x.materialized(b, 1)
    probabilities = target.type.dtype.is_float
    target = moved_axis(b, target, 2, 1) if probabilities else target
    per_sample = b.cross_entropy(logits, target, **{**op.attrs, "reduction": "none"})  # (B, N, d...)
    axes, reduction = tuple(range(1, per_sample.type.rank)), op.attrs["reduction"]
    if reduction == "none":
        return per_sample
    if reduction == "sum" or probabilities:
        return (b.reduce_sum if reduction == "sum" else b.reduce_mean)(per_sample, axes=axes)
    # mean over the labels that are not ignore_index
    kept = b.not_equal(target, b.constant(op.attrs["ignore_index"], target.type.dtype))
    return b.div(b.reduce_sum(per_sample, axes=axes), b.reduce_sum(b.cast(kept, dtype=per_sample.type.dtype), axes=axes))


@batching_rule("nn.scaled_dot_product_attention", "nn.scaled_dot_product_attention_grad")
def attention_batch(b: Builder, op: Op, x: Batched) -> Value | tuple[Value, ...] | None:
    # q, k, v (and the cotangent) of one per-example rank, all batched: the batch axis is one more leading axis
    tensors = 4 if op.name.endswith("_grad") else 3
    rank = x.rank(0)
    if any(x.rank(index) != rank for index in range(tensors)):
        return None
    operands = [x.materialized(b, i) for i in range(tensors)] + [x.aligned(b, i, rank) for i in range(tensors, len(x.values))]
    return b.op(op.name, *operands, **op.attrs)


@batching_rule("nn.masked_softmax")
def masked_softmax_batch(b: Builder, op: Op, x: Batched) -> Value:
    return b.masked_softmax(x.materialized(b, 0), x.aligned(b, 1, x.rank(0)))


@batching_rule("tensor.random_uniform")
def random_uniform_batch(b: Builder, op: Op, x: Batched) -> Value:
    # shaped like a batched operand: one draw per example (vmap's randomness="different"), from the shared (seed, stream)
    seed, like = x.values
    if x.batched[0]:
        raise BatchingError(f"kiln.vmap cannot batch tensor.random_uniform (traced at {op.location or 'an unknown line'}) "
                            "over a batched seed; draw outside the mapped function and pass the noise in")
    return b.random_uniform(seed, like, **op.attrs)
