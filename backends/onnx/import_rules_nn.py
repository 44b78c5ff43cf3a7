"""ONNX import of the neural-network ops kiln has composites for: Softmax and LogSoftmax,
SoftmaxCrossEntropyLoss (class weights, ``ignore_index``, each reduction) and LayerNormalization (with its Mean and
InvStdDev outputs)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.backends.onnx.import_rules_common import _classes_to_axis, optional_input, text_attr
from kiln.backends.onnx.importer import ImportContext, OnnxImportError, attributes, onnx_op
from kiln.compiler.ir.core import Value


@onnx_op("Softmax", "LogSoftmax")
def softmax(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    if ctx.opset < 13:
        raise OnnxImportError(f"{node.op_type} before opset 13 flattens to 2-D; kiln imports opset >= 13 only")
    kiln_op = "nn.softmax" if node.op_type == "Softmax" else "nn.log_softmax"
    return [ctx.op(kiln_op, inputs[0], axis=attributes(node).get("axis", -1))]


@onnx_op("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    # loss_i = -w[y_i] * log_softmax(x)_i[y_i], zero where y_i == ignore_index; mean divides by sum of weights
    attrs = attributes(node)
    scores, labels = ctx.value(inputs[0]), ctx.value(inputs[1])
    weights = optional_input(inputs, 2)
    log_prob = ctx.op("nn.log_softmax", scores, axis=1)
    classes = scores.type.shape[1]
    labels = ctx.op("tensor.cast", labels, dtype="i64") if labels.type.dtype.name != "i64" else labels
    hot = _classes_to_axis(ctx, ctx.op("tensor.one_hot", labels, num_classes=classes, dtype=scores.type.dtype), 1)
    picked = ctx.op("tensor.neg", ctx.op("tensor.reduce_sum", ctx.op("tensor.mul", hot, log_prob), axes=(1,)))
    weight = _sample_weights(ctx, hot, labels, weights, attrs.get("ignore_index"), scores)
    loss = ctx.op("tensor.mul", picked, weight)
    reduction = text_attr(attrs, "reduction", "mean")
    if reduction == "sum":
        loss = ctx.op("tensor.reduce_sum", loss)
    elif reduction == "mean":
        loss = ctx.op("tensor.div", ctx.op("tensor.reduce_sum", loss), ctx.op("tensor.reduce_sum", weight))
    return [loss, log_prob]


def _sample_weights(ctx: ImportContext, hot: Value, labels: Value, weights: Any, ignore_index: Any, scores: Value) -> Value:
    dtype = scores.type.dtype.numpy
    if weights is None:
        weight = ctx.op("tensor.broadcast_to", np.array(1, dtype), shape=labels.type.shape)
    else:
        shape = (1, -1) + (1,) * (hot.type.rank - 2)
        weight = ctx.op("tensor.reduce_sum", ctx.op("tensor.mul", hot, ctx.op("tensor.reshape", weights, shape=tuple(shape))), axes=(1,))
    if ignore_index is None:
        return weight
    kept = ctx.op("tensor.not_equal", labels, np.array(ignore_index, np.int64))
    return ctx.op("tensor.where", kept, weight, np.array(0, dtype))


@onnx_op("LayerNormalization")
def layer_normalization(ctx: ImportContext, node: Any, inputs: list[Any]) -> list[Any]:
    # y = (x - mean) / sqrt(var + eps) * scale + bias over axes [axis, rank); Mean and InvStdDev as extra outputs
    attrs = attributes(node)
    x = ctx.value(inputs[0])
    axis = attrs.get("axis", -1) % x.type.rank
    axes, eps = tuple(range(axis, x.type.rank)), attrs.get("epsilon", 1e-5)
    mean = ctx.op("tensor.reduce_mean", x, axes=axes, keepdims=True)
    centered = ctx.op("tensor.sub", x, mean)
    variance = ctx.op("tensor.reduce_mean", ctx.op("tensor.mul", centered, centered), axes=axes, keepdims=True)
    inverse_std = ctx.op("tensor.div", np.array(1, x.type.dtype.numpy), ctx.op("tensor.sqrt", ctx.op("tensor.add", variance, np.array(eps, x.type.dtype.numpy))))
    y = ctx.op("tensor.mul", ctx.op("tensor.mul", centered, inverse_std), inputs[1])
    if optional_input(inputs, 2) is not None:
        y = ctx.op("tensor.add", y, inputs[2])
    return [y, mean, inverse_std]
