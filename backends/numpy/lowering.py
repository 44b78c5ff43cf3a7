"""The NumPy lowering table: one short kernel per op.

A kernel takes the operand arrays positionally and the op's attributes as
keywords (symbolic dims already resolved to ints) and returns the result.
"""

from __future__ import annotations

import math

import numpy as np

from kiln.backends.base import LoweringTable
from kiln.backends.numpy import half_cast
from kiln.backends.numpy.out_nn import fresh, sigmoid_into, softmax_into
from kiln.compiler.ir.types import DType, normalize_axes

NUMPY = LoweringTable("numpy")

_UNARY = {
    "tensor.neg": np.negative,
    "tensor.exp": np.exp,
    "tensor.log": np.log,
    "tensor.tanh": np.tanh,
    "tensor.sqrt": np.sqrt,
}
_BINARY = {
    "tensor.add": np.add,
    "tensor.sub": np.subtract,
    "tensor.mul": np.multiply,
    "tensor.div": np.divide,
    "tensor.pow": np.power,
    "tensor.maximum": np.maximum,
    "tensor.minimum": np.minimum,
    "tensor.equal": np.equal,
    "tensor.not_equal": np.not_equal,
    "tensor.less": np.less,
    "tensor.less_equal": np.less_equal,
    "tensor.greater": np.greater,
    "tensor.greater_equal": np.greater_equal,
    "tensor.matmul": np.matmul,
}
for _name, _ufunc in {**_UNARY, **_BINARY}.items():
    NUMPY.register(_name)(_ufunc)


NUMPY.register("tensor.sigmoid")(fresh(sigmoid_into))


@NUMPY.register("tensor.relu")
def relu(x):
    return np.maximum(x, x.dtype.type(0))


@NUMPY.register("tensor.where")
def where(condition, x, y):
    return np.where(condition, x, y)


@NUMPY.register("tensor.cast")
def cast(x, *, dtype: DType):
    return half_cast.cast(x, dtype.numpy)  # astype, with float32 <-> float16 at a speed independent of the values


@NUMPY.register("tensor.constant")
def constant(*, value: np.ndarray):
    return value


@NUMPY.register("tensor.reduce_sum")
def reduce_sum(x, *, axes, keepdims: bool):
    # dtype=: NumPy would widen int32 sums to int64, against the IR type
    return np.sum(x, axis=axes, keepdims=keepdims, dtype=x.dtype)


@NUMPY.register("tensor.reduce_mean")
def reduce_mean(x, *, axes, keepdims: bool):
    return np.mean(x, axis=axes, keepdims=keepdims)


@NUMPY.register("tensor.reduce_max")
def reduce_max(x, *, axes, keepdims: bool):
    # an empty reduction gives the identity, -inf (the lowest value), as in ONNX
    return empty_reduction(x, axes, keepdims, lowest(x.dtype)) if np.size(x) == 0 else np.max(x, axis=axes, keepdims=keepdims)


def empty_reduction(x, axes, keepdims: bool, identity):
    """What reducing an empty ``x`` gives: ``identity`` in the reduced shape (NumPy's ``initial=``, which CuPy's max
    and min do not take)."""
    reduced = normalize_axes(axes, x.ndim)
    shape = tuple(1 if axis in reduced else size for axis, size in enumerate(x.shape) if keepdims or axis not in reduced)
    return np.full(shape, identity, dtype=x.dtype)


def lowest(dtype: np.dtype):
    """The identity of max: -inf, the smallest integer, or False."""
    if dtype.kind == "f":
        return -np.inf
    return np.iinfo(dtype).min if dtype.kind in "iu" else False


@NUMPY.register("tensor.reshape")
def reshape(x, *, shape):
    return np.reshape(x, shape)


@NUMPY.register("tensor.transpose")
def transpose(x, *, perm):
    return np.transpose(x, perm)


@NUMPY.register("tensor.broadcast_to")
def broadcast_to(x, *, shape):
    return np.broadcast_to(x, shape)


@NUMPY.register("tensor.one_hot")
def one_hot(labels, *, num_classes: int, dtype: DType):
    return (labels[..., None] == np.arange(num_classes)).astype(dtype.numpy)


@NUMPY.register("tensor.numel")
def numel(x, *, axes, dtype: DType):
    axes = normalize_axes(axes, np.ndim(x))
    return np.asarray(math.prod(np.shape(x)[axis] for axis in axes), dtype=dtype.numpy)


@NUMPY.register("nn.softmax")
def softmax(x, *, axis: int):
    return softmax_into(x, np.empty_like(x), axis)


@NUMPY.register("nn.log_softmax")
def log_softmax(x, *, axis: int):
    # log_softmax = (x - max) - log(sum(exp(x - max))), written over one temporary
    if np.size(x) == 0:  # an empty axis has no max (NumPy's reduce would raise); the result is as empty
        return np.empty_like(x)
    shifted = np.subtract(x, np.maximum.reduce(x, axis=axis, keepdims=True))
    total = np.add.reduce(np.exp(shifted), axis=axis, keepdims=True)
    return np.subtract(shifted, np.log(total, out=total), out=shifted)
