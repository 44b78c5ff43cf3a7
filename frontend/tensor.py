"""The traced ``Tensor``: a symbolic value with Python operators.

Every operator emits one IR op into the graph being traced. Python numbers
mix in as constants of the tensor's dtype, as in PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import Dim, DType, TensorType
from kiln.frontend.trace import TraceContext


class Tensor:
    """A symbolic tensor during tracing."""

    __array_priority__ = 1000  # numpy arrays on the left defer to our reflected operators

    def __init__(self, value: Value):
        self._value = value

    @property
    def value(self) -> Value:
        return self._value

    @property
    def type(self) -> TensorType:
        return self.value.type

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return self.ndim

    def size(self, axis: int | None = None) -> Any:
        return self.shape if axis is None else self.shape[axis]

    def __repr__(self) -> str:
        return f"Tensor({self.type})"

    # arithmetic -----------------------------------------------------------
    def __add__(self, other: Any) -> "Tensor":
        return apply("tensor.add", self, other)

    def __radd__(self, other: Any) -> "Tensor":
        return apply("tensor.add", other, self)

    def __sub__(self, other: Any) -> "Tensor":
        return apply("tensor.sub", self, other)

    def __rsub__(self, other: Any) -> "Tensor":
        return apply("tensor.sub", other, self)

    def __mul__(self, other: Any) -> "Tensor":
        return apply("tensor.mul", self, other)

    def __rmul__(self, other: Any) -> "Tensor":
        return apply("tensor.mul", other, self)

    def __truediv__(self, other: Any) -> "Tensor":
        return apply("tensor.div", self, other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return apply("tensor.div", other, self)

    def __pow__(self, other: Any) -> "Tensor":
        return apply("tensor.pow", self, other)

    def __rpow__(self, other: Any) -> "Tensor":
        return apply("tensor.pow", other, self)

    def __matmul__(self, other: Any) -> "Tensor":
        return apply("tensor.matmul", self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return apply("tensor.matmul", other, self)

    def __neg__(self) -> "Tensor":
        return apply("tensor.neg", self)

    def __pos__(self) -> "Tensor":
        return self

    # comparisons give bool tensors -----------------------------------------
    def __lt__(self, other: Any) -> "Tensor":
        return apply("tensor.less", self, other)

    def __le__(self, other: Any) -> "Tensor":
        return apply("tensor.less_equal", self, other)

    def __gt__(self, other: Any) -> "Tensor":
        return apply("tensor.greater", self, other)

    def __ge__(self, other: Any) -> "Tensor":
        return apply("tensor.greater_equal", self, other)

    def eq(self, other: Any) -> "Tensor":
        return apply("tensor.equal", self, other)

    def ne(self, other: Any) -> "Tensor":
        return apply("tensor.not_equal", self, other)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        from kiln.compiler.errors import TraceError

        raise TraceError(
            "a traced Tensor has no concrete truth value: Python control flow on tensor values "
            "cannot be traced; use kiln.where(condition, a, b) instead"
        )

    # methods ----------------------------------------------------------------
    @property
    def T(self) -> "Tensor":
        return self.transpose()

    def transpose(self, dim0: int | None = None, dim1: int | None = None) -> "Tensor":
        """``x.transpose()`` reverses the axes; ``x.transpose(0, 1)`` swaps two, as in PyTorch."""
        perm = list(reversed(range(self.ndim)))
        if dim0 is not None and dim1 is not None:
            perm = list(range(self.ndim))
            perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
        return apply("tensor.transpose", self, perm=tuple(perm))

    def permute(self, *dims: int) -> "Tensor":
        return apply("tensor.transpose", self, perm=tuple(_flatten_args(dims)))

    def reshape(self, *shape: Any) -> "Tensor":
        from kiln.compiler.ops.tensor import resolve_reshape

        target = tuple(_flatten_args(shape))
        try:
            target = resolve_reshape(self.shape, target)
        except Exception:
            pass  # the op's own shape rule reports the error with the user's line
        return apply("tensor.reshape", self, shape=target)

    view = reshape

    def sum(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> "Tensor":
        return apply("tensor.reduce_sum", self, axes=dim, keepdims=keepdim)

    def mean(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> "Tensor":
        return apply("tensor.reduce_mean", self, axes=dim, keepdims=keepdim)

    def amax(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> "Tensor":
        return apply("tensor.reduce_max", self, axes=dim, keepdims=keepdim)

    max = amax

    def exp(self) -> "Tensor":
        return apply("tensor.exp", self)

    def log(self) -> "Tensor":
        return apply("tensor.log", self)

    def sqrt(self) -> "Tensor":
        return apply("tensor.sqrt", self)

    def tanh(self) -> "Tensor":
        return apply("tensor.tanh", self)

    def sigmoid(self) -> "Tensor":
        return apply("tensor.sigmoid", self)

    def relu(self) -> "Tensor":
        return apply("tensor.relu", self)

    def to(self, dtype: Any) -> "Tensor":
        return apply("tensor.cast", self, dtype=DType.of(dtype))

    def float(self) -> "Tensor":
        return self.to(DType.f32)

    def broadcast_to(self, *shape: Any) -> "Tensor":
        return apply("tensor.broadcast_to", self, shape=tuple(_flatten_args(shape)))

    expand = broadcast_to

    # indexing and the CNN/transformer methods (``frontend/functional_nn.py``) ------
    def __getitem__(self, index: Any) -> "Tensor":
        from kiln.frontend.functional_nn import getitem

        return getitem(self, index)

    def abs(self) -> "Tensor":
        return apply("tensor.abs", self)

    def argmax(self, dim: int = -1, keepdim: bool = False) -> "Tensor":
        return apply("tensor.argmax", self, axis=dim, keepdims=keepdim)

    def amin(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> "Tensor":
        return apply("tensor.reduce_min", self, axes=dim, keepdims=keepdim)

    min = amin

    def clamp(self, min: float | None = None, max: float | None = None) -> "Tensor":  # noqa: A002
        return apply("tensor.clip", self, min=min, max=max)

    def unsqueeze(self, dim: int) -> "Tensor":
        return apply("tensor.expand_dims", self, axes=(dim,))

    def squeeze(self, dim: int | tuple[int, ...] | None = None) -> "Tensor":
        from kiln.frontend.functional_nn import squeeze

        return squeeze(self, dim)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        from kiln.frontend.functional_nn import flatten

        return flatten(self, start_dim, end_dim)

    def split(self, split_size: Any, dim: int = 0) -> tuple["Tensor", ...]:
        from kiln.frontend.functional_nn import split

        return split(self, split_size, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple["Tensor", ...]:
        from kiln.frontend.functional_nn import chunk

        return chunk(self, chunks, dim)


def _flatten_args(args: tuple[Any, ...]) -> list[Any]:
    """``f(2, 3)`` and ``f((2, 3))`` both mean the tuple ``(2, 3)``."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return list(args[0])
    return list(args)


def apply(op_name: str, *operands: Any, **attrs: Any) -> Any:
    """Emit ``op_name`` on tensors (numbers become constants of the tensors' dtype, a non-bool one first: the values'
    of ``where(mask, x, 0.5)``, not the mask's); returns Tensor(s)."""
    context = TraceContext.current()
    dtypes = [o.dtype for o in operands if isinstance(o, Tensor)]
    dtype = next((d for d in dtypes if d is not DType.bool), dtypes[0] if dtypes else DType.f32)
    values = [to_value(context, o, dtype) for o in operands]
    result = context.emit(op_name, *values, **attrs)
    return tuple(Tensor(r) for r in result) if isinstance(result, tuple) else Tensor(result)


def to_value(context: TraceContext, operand: Any, dtype: DType) -> Value:
    if isinstance(operand, Tensor):
        return operand.value
    array = np.asarray(operand)
    if array.dtype.kind in "fiub" and array.ndim == 0:
        array = array.astype(dtype.numpy)  # Python scalars are weakly typed, as in PyTorch
    return context.emit("tensor.constant", value=array)
