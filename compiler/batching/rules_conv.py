"""Batching rules of the 2-d convolution and pooling ops, which take ``(N, C, H, W)`` images.

With weights shared by every example the batch axis folds into the images' sample
axis: ``(B, N, C, H, W) -> (B*N, C, H, W)``, one op, then unfolded. With weights of
their own (and for the weight gradient, which sums over the samples) the batch
folds into the channels instead, and each example becomes its own group of a
grouped convolution: ``(N, B*C, H, W)`` against ``(B*O, C, KH, KW)`` weights with
``groups * B`` groups (torch.func's trick); that needs a static batch size.
"""

from __future__ import annotations

from kiln.compiler.batching.rules import Batched, BatchingError, batching_rule, moved_axis
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value
from kiln.compiler.ir.types import Dim, dim_product

IMAGES = {"tensor.conv2d": (0,), "tensor.conv2d_input_grad": (0,), "tensor.max_pool2d": (0,), "tensor.avg_pool2d": (0,),
          "tensor.avg_pool2d_grad": (0,), "tensor.max_pool2d_grad": (0, 1), "tensor.max_pool2d_select": (0, 1)}
"""Which operands are images; any other operand is a convolution weight."""


def samples_folded(b: Builder, value: Value) -> Value:
    """``(B, N, ...) -> (B*N, ...)``."""
    return b.reshape(value, shape=(-1,) + value.type.shape[2:])


def channels_folded(b: Builder, value: Value) -> Value:
    """``(B, N, C, ...) -> (N, B*C, ...)``: each example's channels side by side."""
    moved = moved_axis(b, value, 0, 1)
    return b.reshape(moved, shape=(moved.type.shape[0], -1) + moved.type.shape[3:])


def channels_unfolded(b: Builder, value: Value, size: Dim, per_example: tuple[Dim, ...]) -> Value:
    """``(N, B*C, ...) -> (B, N, C, ...)`` for a per-example ``(N, C, ...)``."""
    return moved_axis(b, b.reshape(value, shape=(per_example[0], size) + per_example[1:]), 1, 0)


@batching_rule(*IMAGES)
def images_batch(b: Builder, op: Op, x: Batched) -> Value:
    if any(batched for index, batched in enumerate(x.batched) if index not in IMAGES[op.name]):
        return grouped_batch(b, op, x)
    operands = [samples_folded(b, x.materialized(b, i)) if i in IMAGES[op.name] else x.values[i] for i in range(len(x.values))]
    attrs = dict(op.attrs)
    if "input_shape" in attrs:
        shape = tuple(attrs["input_shape"])
        attrs["input_shape"] = (dim_product((x.size, shape[0])),) + shape[1:]
    folded = b.op(op.name, *operands, **attrs)
    return b.reshape(folded, shape=(x.size,) + op.results[0].type.shape)


def _groups(op: Op, size: Dim) -> int:
    if not isinstance(size, int):
        raise BatchingError(f"kiln.vmap batches {op.name} with per-example weights (or its weight gradient) as a grouped "
                            f"convolution, which needs a static batch size, got {size} (from {op.location})")
    return op.attrs["groups"] * size


def grouped_batch(b: Builder, op: Op, x: Batched) -> Value:
    # conv2d or conv2d_input_grad with per-example weights: each example its own group of channels
    images, weight = channels_folded(b, x.materialized(b, 0)), x.materialized(b, 1)
    attrs = {**op.attrs, "groups": _groups(op, x.size)}
    if "input_shape" in attrs:
        shape = tuple(attrs["input_shape"])
        attrs["input_shape"] = (shape[0], shape[1] * x.size) + shape[2:]
    out = b.op(op.name, images, b.reshape(weight, shape=(-1,) + weight.type.shape[2:]), **attrs)
    return channels_unfolded(b, out, x.size, op.results[0].type.shape)


@batching_rule("tensor.conv2d_weight_grad")
def conv2d_weight_grad_batch(b: Builder, op: Op, x: Batched) -> Value:
    # each example's weight gradient sums over its own samples only: one group per example
    shape = tuple(op.attrs["weight_shape"])
    images, cotangents = channels_folded(b, x.materialized(b, 0)), channels_folded(b, x.materialized(b, 1))
    attrs = {**op.attrs, "groups": _groups(op, x.size), "weight_shape": (shape[0] * x.size,) + shape[1:]}
    return b.reshape(b.conv2d_weight_grad(images, cotangents, **attrs), shape=(x.size,) + shape)
