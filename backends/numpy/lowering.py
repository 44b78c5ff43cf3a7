"""The NumPy lowering table: one short kernel per op.

A kernel takes the operand arrays positionally and the op's attributes as
keywords (symbolic dims already resolved to ints) and returns the result.
"""

from __future__ import annotations

import math

import numpy as np

from kiln.backends.base import LoweringTable
from kiln.compiler.ir.types import DType

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


@NUMPY.register("tensor.sigmoid")
def sigmoid(x):
    # sigmoid(x) = (tanh(x/2) + 1) / 2: no overflow for large |x|
    return (np.tanh(x * x.dtype.type(0.5)) + 1) * x.dtype.type(0.5)


@NUMPY.register("tensor.relu")
def relu(x):
    return np.maximum(x, x.dtype.type(0))


@NUMPY.register("tensor.where")
def where(condition, x, y):
    return np.where(condition, x, y)


@NUMPY.register("tensor.cast")
def cast(x, *, dtype: DType):
    return np.asarray(x).astype(dtype.numpy, copy=False)


@NUMPY.register("tensor.constant")
def constant(*, value: np.ndarray):
    return value


@NUMPY.register("tensor.reduce_sum")
def reduce_sum(x, *, axes, keepdims: bool):
    return np.sum(x, axis=axes, keepdims=keepdims)


@NUMPY.register("tensor.reduce_mean")
def reduce_mean(x, *, axes, keepdims: bool):
    return np.mean(x, axis=axes, keepdims=keepdims)


@NUMPY.register("tensor.reduce_max")
def reduce_max(x, *, axes, keepdims: bool):
    return np.max(x, axis=axes, keepdims=keepdims)


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
    axes = range(np.ndim(x)) if axes is None else axes
    return np.asarray(math.prod(np.shape(x)[axis] for axis in axes), dtype=dtype.numpy)


@NUMPY.register("nn.softmax")
def softmax(x, *, axis: int):
    # softmax = exp(x - max) / sum(exp(x - max))
    shifted_exp = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted_exp / np.sum(shifted_exp, axis=axis, keepdims=True)


@NUMPY.register("nn.log_softmax")
def log_softmax(x, *, axis: int):
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@NUMPY.register("nn.cross_entropy")
def cross_entropy(logits, labels, *, reduction: str):
    # loss_i = logsumexp(x_i) - x_i[y_i]
    per_sample = -np.take_along_axis(log_softmax(logits, axis=1), labels[:, None], axis=1)[:, 0]
    return _reduce(per_sample, reduction)


@NUMPY.register("nn.mse")
def mse(prediction, target, *, reduction: str):
    difference = prediction - target
    return _reduce(difference * difference, reduction)


def _reduce(per_element, reduction: str):
    if reduction == "none":
        return per_element
    return np.mean(per_element) if reduction == "mean" else np.sum(per_element)


@NUMPY.register("optim.sgd_update")
def sgd_update(param, grad, lr):
    return param - lr * grad
