"""More of PyTorch's ``Tensor`` methods, each a few existing ops: comparisons by name, bool logic (``~m``, ``a & b``),
casts (``long()``, ``bool()``), ``isnan``/``isinf``/``isfinite``, ``new_zeros``/``new_ones``/``new_full``,
``gather``/``index_select``, ``roll``, ``repeat_interleave``, ``tile``, ``unflatten``, ``t``/``mT``, ``tril``/``triu``,
``clone``/``contiguous``. ``Tensor`` inherits them.

Values that only exist when the step runs (``item()``, ``tolist()``, ``numpy()``) and results whose shape depends on
the data (``nonzero``, ``masked_select``) cannot be traced: they raise an error that says what to do instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import Dim, DType
from kiln.frontend.trace import located_error


def _apply(*args: Any, **attrs: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply(*args, **attrs)


def _tensor_class() -> type:
    from kiln.frontend.tensor import Tensor

    return Tensor


class TorchMethods:
    """Methods over existing ops; see the module docstring."""

    # comparisons and bool logic ------------------------------------------
    def gt(self, other: Any) -> Any:
        return self > other

    def ge(self, other: Any) -> Any:
        return self >= other

    def lt(self, other: Any) -> Any:
        return self < other

    def le(self, other: Any) -> Any:
        return self <= other

    greater, greater_equal, less, less_equal = gt, ge, lt, le

    def logical_not(self) -> Any:
        return _apply("tensor.equal", _as_bool(self), np.asarray(False))

    def logical_and(self, other: Any) -> Any:
        return _apply("tensor.where", _as_bool(self), _as_bool(other), np.asarray(False))

    def logical_or(self, other: Any) -> Any:
        return _apply("tensor.where", _as_bool(self), np.asarray(True), _as_bool(other))

    def logical_xor(self, other: Any) -> Any:
        return _apply("tensor.not_equal", _as_bool(self), _as_bool(other))

    def __invert__(self) -> Any:
        _require_bool("~", self)
        return self.logical_not()

    def __and__(self, other: Any) -> Any:
        _require_bool("&", self, other)
        return self.logical_and(other)

    def __or__(self, other: Any) -> Any:
        _require_bool("|", self, other)
        return self.logical_or(other)

    def __xor__(self, other: Any) -> Any:
        _require_bool("^", self, other)
        return self.logical_xor(other)

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def isnan(self) -> Any:
        return _apply("tensor.not_equal", self, self)

    def isinf(self) -> Any:
        return _apply("tensor.equal", _apply("tensor.abs", self), np.inf) if self.dtype.is_float else _all_false(self)

    def isfinite(self) -> Any:
        return _apply("tensor.less", _apply("tensor.abs", self), np.inf) if self.dtype.is_float else _all_false(self).logical_not()

    # casts and copies -------------------------------------------------------
    def int(self) -> Any:
        return self.to(DType.i32)

    def long(self) -> Any:
        return self.to(DType.i64)

    def bool(self) -> Any:
        return self.to(DType.bool)

    def double(self) -> Any:
        return self.to(DType.f64)

    def half(self) -> Any:
        raise located_error("half(): float16 is not an IR dtype of kiln yet; keep float32 (or use double())")

    def clone(self) -> Any:
        """The same values as a new tensor: writing into it in place leaves this one (and its views) alone."""
        return _tensor_class()(self.value)

    def contiguous(self) -> Any:
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Any:
        """Gradients are what the compiled step differentiates by; this changes nothing."""
        return self

    # new tensors like this one ---------------------------------------------
    def new_full(self, size: Any, fill_value: Any, *, dtype: Any = None) -> Any:
        """``fill_value`` in this tensor's dtype (or ``dtype``); ``size`` may hold this tensor's symbolic dims."""
        target = self.dtype if dtype is None else DType.of(dtype)
        shape = tuple(_sizes(size))
        scalar = _apply("tensor.constant", value=np.asarray(fill_value, dtype=target.numpy))
        return scalar.broadcast_to(shape) if shape else scalar

    def new_zeros(self, *size: Any, dtype: Any = None) -> Any:
        return self.new_full(size, 0, dtype=dtype)

    def new_ones(self, *size: Any, dtype: Any = None) -> Any:
        return self.new_full(size, 1, dtype=dtype)

    def new_tensor(self, data: Any, *, dtype: Any = None) -> Any:
        target = self.dtype if dtype is None else DType.of(dtype)
        return _apply("tensor.constant", value=np.asarray(data, dtype=target.numpy))

    # indexing ---------------------------------------------------------------
    def index_select(self, dim: int, index: Any) -> Any:
        """Rows ``index`` (1-D integers) along ``dim``."""
        if getattr(index, "ndim", 1) != 1:
            raise located_error(f"index_select takes a 1-D index, got {getattr(index, 'type', index)}")
        return _apply("tensor.take", self, index, axis=dim)

    def gather(self, dim: int, index: Any) -> Any:
        """``out[i][j] = self[i][index[i][j]]`` along ``dim`` (PyTorch's ``gather``): each index picks by a one-hot
        select and a sum over ``dim`` (``where``, so a NaN elsewhere in the row stays out of the result)."""
        from kiln.frontend.functional import movedim

        axis = dim % self.ndim
        if index.ndim != self.ndim:
            raise located_error(f"gather: the index {index.type} needs the rank of {self.type}")
        source = movedim(_leading_slices(self, index, axis), axis, -1)
        picks = _apply("tensor.one_hot", movedim(index, axis, -1), num_classes=self.shape[axis], dtype=DType.bool)
        chosen = _apply("tensor.where", picks, source.unsqueeze(-2), 0.0).sum(-1)
        return movedim(chosen, -1, axis)

    def roll(self, shifts: Any, dims: Any = None) -> Any:
        """Elements shifted by ``shifts`` along ``dims`` (wrapping around); without ``dims``, of the flattened tensor."""
        from kiln.frontend.functional_nn import cat

        if dims is None:
            return self.flatten().roll(shifts, 0).reshape(self.shape)
        shifts, dims = (tuple(v) if isinstance(v, (tuple, list)) else (v,) for v in (shifts, dims))
        result = self
        for shift, dim in zip(shifts, dims):
            size = result.shape[dim]
            if not isinstance(size, int):
                raise located_error(f"roll along the symbolic dim {size} of {result.type} is not supported")
            cut = size - shift % size
            if cut % size:
                result = cat([result.narrow(dim, cut, size - cut), result.narrow(dim, 0, cut)], dim)
        return result

    def repeat_interleave(self, repeats: int, dim: int | None = None) -> Any:
        """Each element ``repeats`` times in a row along ``dim`` (of the flattened tensor without one); an int count."""
        if not isinstance(repeats, int):
            raise located_error("repeat_interleave takes an int count: per-element counts give a data-dependent shape")
        if dim is None:
            return self.flatten().repeat_interleave(repeats, 0)
        axis = dim % self.ndim
        shape = list(self.shape)
        widened = self.unsqueeze(axis + 1).broadcast_to(tuple(shape[: axis + 1]) + (repeats,) + tuple(shape[axis + 1:]))
        return widened.reshape(tuple(shape[:axis]) + (_times(shape[axis], repeats),) + tuple(shape[axis + 1:]))

    def tile(self, *dims: Any) -> Any:
        reps = list(_sizes(dims))
        return self.repeat(*([1] * (self.ndim - len(reps)) + reps))

    def unflatten(self, dim: int, sizes: Any) -> Any:
        axis = dim % self.ndim
        return self.reshape(tuple(self.shape[:axis]) + tuple(sizes) + tuple(self.shape[axis + 1:]))

    def t(self) -> Any:
        if self.ndim > 2:
            raise located_error(f"t() expects a tensor of at most 2 dims, got {self.type}; use transpose(dim0, dim1) or mT")
        return self.transpose() if self.ndim == 2 else self

    @property
    def mT(self) -> Any:  # noqa: N802 (PyTorch's name)
        return self.transpose(-2, -1)

    def tril(self, diagonal: int = 0) -> Any:
        return _apply("tensor.tril", self, k=diagonal)

    def triu(self, diagonal: int = 0) -> Any:
        return _apply("tensor.triu", self, k=diagonal)

    def maximum(self, other: Any) -> Any:
        return _apply("tensor.maximum", self, other)

    def minimum(self, other: Any) -> Any:
        return _apply("tensor.minimum", self, other)

    def outer(self, other: Any) -> Any:
        return self.unsqueeze(-1) * other.unsqueeze(0)

    def dot(self, other: Any) -> Any:
        return (self * other).sum()

    # what a trace cannot give ------------------------------------------------
    def item(self) -> Any:
        raise located_error(f"item() of a traced {self.type}: its value exists only when the compiled function runs; "
                            "return the tensor from the function (a training step returns its loss) and read it there")

    def tolist(self) -> Any:
        raise located_error(f"tolist() of a traced {self.type}: its values exist only when the compiled function runs; "
                            "return the tensor and convert the result")

    def numpy(self) -> Any:
        raise located_error(f"numpy() of a traced {self.type}: its values exist only when the compiled function runs; "
                            "return the tensor (compiled functions return NumPy arrays)")

    def nonzero(self, *args: Any, **kwargs: Any) -> Any:
        raise located_error("nonzero() has a data-dependent shape, which kiln does not trace; use a bool mask with "
                            "where (or masked_fill) instead")

    argwhere = nonzero

    def masked_select(self, mask: Any) -> Any:
        raise located_error("masked_select() has a data-dependent shape, which kiln does not trace; use "
                            "where(mask, x, 0) and reduce, or masked_fill")


def _as_bool(value: Any) -> Any:
    if isinstance(value, _tensor_class()):
        return value if value.dtype is DType.bool else value.to(DType.bool)
    return np.asarray(bool(value))


def _require_bool(operator: str, *operands: Any) -> None:
    """Bitwise operators are logic on bool tensors; kiln has no integer bit ops."""
    for operand in operands:
        if isinstance(operand, _tensor_class()) and operand.dtype is not DType.bool:
            raise located_error(f"{operator} on a {operand.dtype} tensor: kiln has bool logic only (compare first: (x > 0) & m)")


def _all_false(x: Any) -> Any:
    return x.new_full(x.shape, False, dtype=DType.bool)


def _sizes(size: Any) -> Any:
    """``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])`` all mean ``(2, 3)``."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return size[0]
    return size


def _leading_slices(x: Any, index: Any, axis: int) -> Any:
    """``x`` cut to ``index``'s sizes on every axis but ``axis`` (PyTorch's gather reads only that much)."""
    for dim, (size, wanted) in enumerate(zip(x.shape, index.shape)):
        if dim != axis and size != wanted:
            if not isinstance(size, int) or not isinstance(wanted, int) or wanted > size:
                raise located_error(f"gather: the index {index.type} does not fit {x.type} outside dim {axis}")
            x = x.narrow(dim, 0, wanted)
    return x


def _times(dim: Dim, count: int) -> Dim:
    return dim * count if isinstance(dim, int) else -1
