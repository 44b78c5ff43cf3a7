"""What the ONNX import handlers share: reading optional inputs and string attributes, telling
shape arithmetic (known arrays, static shapes) from run-time values, integer labels and class axes for the one-hot
based ops, static re-indexing along an axis, and the refusal message for what kiln cannot import."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.backends.onnx.importer import ImportContext, OnnxImportError, ShapeValue, known
from kiln.compiler.ir.core import Value


def text_attr(attrs: dict, key: str, default: str) -> str:
    """A string attribute (ONNX stores them as bytes)."""
    value = attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else value


def optional_input(inputs: list[Any], index: int) -> Any:
    """An optional input: ``None`` when absent or left empty."""
    return inputs[index] if len(inputs) > index else None


def _plain_known(item: Any) -> bool:
    return known(item) and not (isinstance(item, ShapeValue) and not all(isinstance(d, int) for d in item.dims))


def _int64_labels(ctx: ImportContext, indices: Any, size: int) -> Value:
    """Indices as int64 with negative ones counted from ``size`` (ONNX allows both)."""
    labels = ctx.value(indices)
    if labels.type.dtype.name != "i64":
        labels = ctx.op("tensor.cast", labels, dtype="i64")
    negative = ctx.op("tensor.less", labels, np.array(0, np.int64))
    return ctx.op("tensor.where", negative, ctx.op("tensor.add", labels, np.array(size, np.int64)), labels)


def _classes_to_axis(ctx: ImportContext, x: Value, axis: int) -> Value:
    """Move the last axis (one_hot's classes) to ``axis``."""
    rank = x.type.rank
    if axis % rank == rank - 1:
        return x
    perm = list(range(rank - 1))
    perm.insert(axis % rank, rank - 1)
    return ctx.op("tensor.transpose", x, perm=tuple(perm))


def _take_positions(ctx: ImportContext, x: Value, axis: int, positions: np.ndarray) -> Value:
    """``x`` re-indexed along ``axis`` by static positions (reversal, edge/reflect/wrap padding)."""
    return ctx.op("tensor.take", x, np.asarray(positions, np.int64), axis=axis)


def refuse(node: Any, why: str) -> OnnxImportError:
    return OnnxImportError(f"{node.op_type} {why} is not supported by kiln's importer")
