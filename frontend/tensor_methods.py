"""More of PyTorch's ``Tensor`` methods, each a few existing ops: comparisons by name, bool logic by name,
casts (``long()``, ``bool()``), ``isnan``/``isinf``/``isfinite``, ``new_zeros``/``new_ones``/``new_full``,
``gather``/``index_select``, ``roll``, ``repeat_interleave``, ``tile``, ``unflatten``, ``t``/``mT``, ``tril``/``triu``,
``clone``/``contiguous``. ``Tensor`` inherits them.

Values that only exist when the step runs (``item()``, ``tolist()``, ``numpy()``) and results whose shape depends on
the data (``nonzero``, ``masked_select``) cannot be traced: they raise an error that says what to do instead.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import Dim, DType
from kiln.frontend.torch_dtypes import get_default_dtype, promote_types
from kiln.frontend.eager_values import ARRAYS, COPIES
from kiln.frontend.tensor_bitwise import BitwiseMethods
from kiln.frontend.tensor_operand_checks import check_tensor_operands
from kiln.frontend.trace import TraceContext, located_error


def _apply(*args: Any, **attrs: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply(*args, **attrs)


@functools.cache
def _tensor_class() -> type:
    """``Tensor``, imported on first use (it builds on these methods) and kept: an import statement runs at each call."""
    from kiln.frontend.tensor import Tensor

    return Tensor


class TorchMethods(BitwiseMethods):
    """Methods over existing ops; see the module docstring. The bit operators (``&``, ``<<``, ...) are
    ``BitwiseMethods``' (``tensor_bitwise.py``)."""

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
        return self.to(DType.f16)

    def bfloat16(self) -> Any:
        return self.to(DType.bf16)

    def clone(self, *, memory_format: Any = None) -> Any:
        """The same values as a new tensor: writing into it in place leaves this one (and its views) alone. Eagerly,
        its own copy of the array (a parameter's array changes with ``optimizer.step()``), gradients flowing through."""
        value = self.value
        if value not in ARRAYS:  # traced: values are immutable, writes rebind
            return _tensor_class()(value)
        if not TraceContext.current().eager:  # an eager tensor read in a trace (a closure's): its traced value, a graph
            from kiln.frontend.op_dispatch import to_value  # input in kiln.compile (lifted: a write to the copy rebinds it alone)

            return _tensor_class()(to_value(TraceContext.current(), self, None))
        context = TraceContext.current()
        copied = context.emit("tensor.broadcast_to", value, shape=value.type.shape)
        ARRAYS[copied] = np.array(ARRAYS[copied])
        COPIES.add(copied)  # its own storage: no view of the source to the version check
        if not (context.grad_enabled and self.requires_grad):  # no gradient: a leaf, so a later write to the source
            copied = context.without_gradient(copied)  # (a buffer's copy_) cannot reach backward() through it
        return _tensor_class()(copied)

    def contiguous(self, memory_format: Any = None) -> Any:
        """The tensor itself where PyTorch's strides are contiguous, else a copy (a write to it leaves this tensor alone),
        as PyTorch's; every memory format is kiln's one layout (``frontend/memory_format.py``)."""
        from kiln.frontend.memory_format import check_rank

        check_rank(memory_format, self.ndim, "contiguous")
        return self if self.is_contiguous() else self.clone()

    # new tensors like this one ---------------------------------------------
    def new_full(self, size: Any, fill_value: Any, *, dtype: Any = None) -> Any:
        """``fill_value`` in this tensor's dtype (or ``dtype``); ``size`` may hold this tensor's symbolic dims."""
        target = self.dtype if dtype is None else DType.of(dtype)
        shape = _flatten_args(size)
        scalar = _apply("tensor.constant", value=np.asarray(fill_value, dtype=target.numpy))
        return scalar.broadcast_to(shape) if shape else scalar

    def new_zeros(self, *size: Any, dtype: Any = None) -> Any:
        return self.new_full(size, 0, dtype=dtype)

    def new_ones(self, *size: Any, dtype: Any = None) -> Any:
        return self.new_full(size, 1, dtype=dtype)

    def new_tensor(self, data: Any, *, dtype: Any = None) -> Any:
        """A copy of ``data`` in this tensor's dtype (or ``dtype``), detached, as torch's; a tensor ``data`` stays a
        tensor op, so a traced one (``torch.arange(n).unfold(...)`` in a compiled step) is copied, not read."""
        target = self.dtype if dtype is None else DType.of(dtype)
        if isinstance(data, _tensor_class()):
            return data.detach().to(target).clone()
        return _apply("tensor.constant", value=np.array(data, dtype=target.numpy))  # a copy, as torch's

    # indexing ---------------------------------------------------------------
    def index_select(self, dim: int, index: Any) -> Any:
        """Rows ``index`` (1-D integers, or a 0-d one: one row, kept as a dim of 1) along ``dim``."""
        if getattr(index, "ndim", 1) > 1:
            raise located_error(f"index_select takes a 1-D index, got {getattr(index, 'type', index)}")
        from kiln.frontend.index_range_checks import check_rows_in_range  # lazily: it reads eager values

        index = check_rows_in_range("index_select", index, self.shape[dim])
        return _apply("tensor.take", self, index.reshape(1) if getattr(index, "ndim", 1) == 0 else index, axis=dim)

    def gather(self, dim: int, index: Any) -> Any:
        """``out[i][j] = self[i][index[i][j]]`` along ``dim`` (PyTorch's ``gather``). Static shapes take from the
        flattened tensor at ``index * stride + offset`` (one ``tensor.take``, whose gradient scatters back); with
        a symbolic dim, a one-hot select and a sum over ``dim`` (``where``, so a NaN elsewhere stays out)."""
        from kiln.frontend.index_bounds_checks import check_index_values  # lazily: it reads eager values

        axis = dim % self.ndim
        if not index.dtype.is_int:  # type: ignore[attr-defined]
            raise located_error("gather(): Expected dtype int32/int64 for index (as in PyTorch; a float index would be "
                                f"truncated), got {index.type}")
        if index.ndim != self.ndim:
            raise located_error(f"gather: the index {index.type} needs the rank of {self.type}")
        index = check_index_values(index, axis, self.shape[axis])
        source = _leading_slices(self, index, axis)
        if all(isinstance(d, int) for d in source.shape + index.shape):
            return _flat_gather(source, axis, index)
        return _one_hot_gather(source, axis, index)

    def take_along_dim(self, indices: Any, dim: int | None = None) -> Any:
        """``self`` gathered at ``indices`` along ``dim``, the two broadcast against each other in the other dims (as
        ``np.take_along_axis`` and torch's: ``x.take_along_dim(idx_of_shape_1x1xk, -1)`` reads every row); with no
        ``dim``, from the flattened tensor at the flattened indices."""
        if dim is None:
            return self.reshape(-1).gather(0, indices.reshape(-1))
        if indices.ndim != self.ndim:
            raise located_error(f"torch.take_along_dim(): input and indices should have the same number of dimensions, "
                                f"but got {self.ndim} dimensions for input, and {indices.ndim} dimensions for indices")
        if indices.dtype is not DType.i64:
            from kiln.frontend.tensor_bitwise import TORCH_NAMES

            raise located_error(f"torch.take_along_dim(): dtype of indices should be Long but got "
                                f"{TORCH_NAMES.get(indices.dtype, indices.dtype)}")
        from kiln.frontend.functional import _one_dim

        axis = _one_dim("take_along_dim", self, dim)
        common = _broadcast_except(tuple(self.shape), tuple(indices.shape), axis)
        return _broadcast_to(self, common, axis).gather(axis, _broadcast_to(indices, common, axis))

    # sorting ----------------------------------------------------------------
    def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
        """The indices that sort along ``dim`` (always stable; NaN largest, as PyTorch's)."""
        return _apply("tensor.argsort", self, axis=dim, descending=descending)

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
        """``(values, indices)`` as PyTorch's; the values' gradient goes back to where each came from."""
        from kiln.frontend.tensor import ValuesIndices

        indices = self.argsort(dim, descending)
        return ValuesIndices(self.gather(dim, indices), indices)

    def msort(self) -> Any:
        return self.sort(0).values

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
        """The ``k`` largest (or smallest) along ``dim`` and their indices, in order; ties by the lower index."""
        from kiln.frontend.tensor import ValuesIndices

        size = self.shape[dim]
        if isinstance(k, int) and isinstance(size, int) and not 0 <= k <= size:  # torch's words, then kiln's
            raise located_error(f"selected index k out of range (topk: k={k}, dim {dim} of {self.type} has {size})")
        if not isinstance(k, int) or not isinstance(size, int):
            raise located_error(f"topk: k={k!r} must be an int in [0, {size}] for dim {dim} of {self.type}")
        indices = self.argsort(dim, descending=largest).narrow(dim, 0, k)
        return ValuesIndices(self.gather(dim, indices), indices)

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

    def repeat_interleave(self, repeats: Any = None, dim: int | None = None, *, output_size: int | None = None) -> Any:
        """Each element ``repeats`` times in a row along ``dim`` (of the flattened tensor without one): an int count,
        or eagerly per-element counts (a tensor or list); ``torch.repeat_interleave(counts)`` repeats each index.
        ``output_size`` (the result's length along ``dim``) is checked against the counts, as torch's."""
        if repeats is None:
            return _arange_like_counts(self).repeat_interleave(self, 0, output_size=output_size)
        if dim is None:
            return self.flatten().repeat_interleave(repeats, 0, output_size=output_size)
        axis = dim % self.ndim
        if not isinstance(repeats, int):
            return _checked_output_size(_repeat_by_counts(self, repeats, axis, output_size), axis, output_size)
        shape = list(self.shape)
        _check_output_size(_times(shape[axis], repeats), output_size)
        widened = self.unsqueeze(axis + 1).broadcast_to(tuple(shape[: axis + 1]) + (repeats,) + tuple(shape[axis + 1:]))
        return widened.reshape(tuple(shape[:axis]) + (_times(shape[axis], repeats),) + tuple(shape[axis + 1:]))

    def tile(self, *dims: Any) -> Any:
        reps = list(_flatten_args(dims))
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
        check_tensor_operands("maximum", (("other", other, 1),))  # a number is torch's TypeError (clamp takes one)
        return _apply("tensor.maximum", self, other)

    def minimum(self, other: Any) -> Any:
        check_tensor_operands("minimum", (("other", other, 1),))
        return _apply("tensor.minimum", self, other)

    def outer(self, other: Any) -> Any:
        return self.unsqueeze(-1) * other.unsqueeze(0)

    def dot(self, other: Any) -> Any:
        from kiln.frontend.matmul_shape_checks import check_dot_operands  # lazily: it builds on the trace

        check_dot_operands(self, other)
        return (self * other).sum()

    # math over the trigonometric, rounding and scan ops ---------------------
    def sin(self) -> Any:
        return _apply("tensor.sin", _floating(self))

    def cos(self) -> Any:
        return _apply("tensor.cos", _floating(self))

    def floor(self) -> Any:
        return _apply("tensor.floor", self) if self.dtype.is_float else self

    def ceil(self) -> Any:
        return _apply("tensor.ceil", self) if self.dtype.is_float else self

    def round(self, decimals: int = 0) -> Any:
        """Half to even, as PyTorch's; with ``decimals``, of ``x * 10**decimals`` scaled back."""
        if not self.dtype.is_float:
            return self
        if decimals == 0:
            return _apply("tensor.round", self)
        scale = 10.0 ** decimals
        return _apply("tensor.round", self * scale) / scale

    def trunc(self) -> Any:
        """Toward zero: the floor of positive, the ceiling of negative values."""
        return _apply("tensor.where", self < 0, self.ceil(), self.floor()) if self.dtype.is_float else self

    fix = trunc

    def frac(self) -> Any:
        return self - self.trunc()

    def cumsum(self, dim: int, *, dtype: Any = None) -> Any:
        """Running sums along ``dim``; bool and int32 sum in int64, as PyTorch's."""
        return _apply("tensor.cumsum", _scanned(self, dtype), axis=dim)

    def cumprod(self, dim: int, *, dtype: Any = None) -> Any:
        """Running products along ``dim``; bool and int32 multiply in int64, as PyTorch's. The gradient is exact where
        ``self`` has zeros (``compiler/autodiff/rules_movement.py``)."""
        return _apply("tensor.cumprod", _scanned(self, dtype), axis=dim)

    def floor_divide(self, other: Any) -> Any:
        """``floor(self / other)``, in the promoted dtype (integers through float64, exact below 2**53)."""
        return _rounded_division(self, other, "floor")

    __floordiv__ = floor_divide

    def __rfloordiv__(self, other: Any) -> Any:
        return _rounded_division(self.new_tensor(other), self, "floor")

    def remainder(self, other: Any) -> Any:
        """``self - floor(self / other) * other``: the sign of the divisor, as Python's and PyTorch's ``%``."""
        return self - self.floor_divide(other) * other

    __mod__ = remainder

    def __rmod__(self, other: Any) -> Any:
        return self.new_tensor(other).remainder(self)

    def fmod(self, other: Any) -> Any:
        """``self - trunc(self / other) * other``: the sign of the dividend, as C's ``fmod``."""
        return self - _rounded_division(self, other, "trunc") * other

    # what a trace cannot give ------------------------------------------------
    def item(self) -> Any:
        known = traced_values(self)
        if known is not None and known.size == 1:
            return known.reshape(()).item()
        raise located_error(f"item() of a traced {self.type}: its value exists only when the compiled function runs; "
                            "return the tensor from the function (a training step returns its loss) and read it there")

    def tolist(self) -> Any:
        known = traced_values(self)
        if known is not None:
            return known.tolist()
        raise located_error(f"tolist() of a traced {self.type}: its values exist only when the compiled function runs; "
                            "return the tensor and convert the result")

    def numpy(self) -> Any:
        known = traced_values(self)
        if known is not None:  # Tacotron 2's `input_lengths.cpu().numpy()` before pack_padded_sequence
            return known.copy()
        raise located_error(f"numpy() of a traced {self.type}: its values exist only when the compiled function runs; "
                            "return the tensor (compiled functions return NumPy arrays)")


def traced_values(tensor: Any) -> np.ndarray | None:
    """The values of a traced tensor where the trace knows them: computed from constants only (Transformer-XL's
    ``attn_mask.any().item()``), or, in a ``kiln.compile`` trace, from the call's inputs, specialized and guarded
    (``frontend/value_guards.py``: Conformer's ``int(torch.max(lengths).item())``); else None."""
    from kiln.frontend.trace_known_values import known_value
    from kiln.frontend.value_guards import specialized_value

    known = known_value(tensor)
    return known if known is not None else specialized_value(tensor)


def _floating(x: Any) -> Any:
    """``x``, cast to the default float dtype if it is not floating (PyTorch's promotion for ``reciprocal``, ``rsqrt``,
    ``sin``...)."""
    return x if x.dtype.is_float else x.to(get_default_dtype())


def _is_one(value: Any) -> bool:
    return not isinstance(value, _tensor_class()) and value == 1


def _scanned(x: Any, dtype: Any) -> Any:
    """What ``cumsum``/``cumprod`` run over: ``x`` in ``dtype`` if given, else bool and int32 widened to int64."""
    return x.to(dtype) if dtype is not None else x.long() if x.dtype is not DType.i64 and not x.dtype.is_float else x


def _rounded_division(x: Any, y: Any, mode: str) -> Any:
    """``x / y`` rounded by ``mode`` (floor or trunc), in PyTorch's result dtype: integers (a Python int takes ``x``'s
    dtype) divide exactly in float64 and come back in their promoted integer dtype (int64 for bools)."""
    is_tensor = isinstance(y, _tensor_class())
    other = y.dtype if is_tensor else DType.f32 if isinstance(y, float) else x.dtype
    if x.dtype.is_float or other.is_float:
        quotient = x / y
        return quotient.floor() if mode == "floor" else quotient.trunc()
    quotient = x.double() / (y.double() if is_tensor else float(y))
    rounded = quotient.floor() if mode == "floor" else quotient.trunc()
    dtype = promote_types(x.dtype, other)
    return rounded.to(dtype if dtype.is_int else DType.i64)


def _as_bool(value: Any) -> Any:
    if isinstance(value, _tensor_class()):
        return value if value.dtype is DType.bool else value.to(DType.bool)
    return np.asarray(bool(value))


def _all_false(x: Any) -> Any:
    return x.new_full(x.shape, False, dtype=DType.bool)


def _flatten_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])`` all mean the tuple ``(2, 3)``; an integer tensor of one element
    among them is its int, as torch takes it (Longformer's ``view(b, torch.div(n, 2 * w, rounding_mode="trunc"), ...)``;
    traced, ``kiln.compile`` specializes on it)."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    for item in args:
        if type(item) is not int:
            return tuple([_index(item) for item in args])
    return tuple(args)  # plain ints (most calls): as they are


def _index(item: Any) -> Any:
    """A tensor as its int (``operator.index``: its one integer value); anything else as it is."""
    return item.__index__() if isinstance(item, _tensor_class()) else item


def _flat_gather(x: Any, axis: int, index: Any) -> Any:
    """``gather`` on static shapes: a ``take`` from the flattened ``x`` at ``index * stride + offset``."""
    strides = np.cumprod((1,) + tuple(reversed(x.shape[1:])))[::-1]
    offsets = sum(np.arange(size).reshape((-1,) + (1,) * (index.ndim - d - 1)) * int(strides[d])
                  for d, size in enumerate(index.shape) if d != axis)
    flat = index.long() * int(strides[axis]) + _apply("tensor.constant", value=np.asarray(offsets, np.int64))
    return _apply("tensor.take", x.reshape(-1), flat, axis=0)


def _one_hot_gather(x: Any, axis: int, index: Any) -> Any:
    from kiln.frontend.functional import movedim

    source = movedim(x, axis, -1)
    picks = _apply("tensor.one_hot", movedim(index, axis, -1), num_classes=x.shape[axis], dtype=DType.bool)
    zero = 0.0 if x.dtype.is_float else 0  # a float zero would promote an integer source to float32
    chosen = _apply("tensor.where", picks, source.unsqueeze(-2), zero).sum(-1)
    return movedim(chosen if chosen.dtype is x.dtype else chosen.to(x.dtype), -1, axis)  # a bool sum counts in int64


def _broadcast_except(shape: tuple[Dim, ...], other: tuple[Dim, ...], axis: int) -> tuple[Dim, ...]:
    """The broadcast of two shapes of one rank, ignoring ``axis`` (1 there)."""
    from kiln.compiler.ir.types import broadcast_shapes

    def without_axis(dims: tuple[Dim, ...]) -> tuple[Dim, ...]:
        return dims[:axis] + (1,) + dims[axis + 1:]

    return broadcast_shapes(without_axis(shape), without_axis(other))


def _broadcast_to(tensor: Any, common: tuple[Dim, ...], axis: int) -> Any:
    """``tensor`` broadcast to ``common`` in every dim but ``axis``, where it keeps its size."""
    shape = common[:axis] + (tensor.shape[axis],) + common[axis + 1:]
    return tensor if tuple(tensor.shape) == shape else tensor.broadcast_to(shape)


def _leading_slices(x: Any, index: Any, axis: int) -> Any:
    """``x`` cut to ``index``'s sizes on every axis but ``axis`` (PyTorch's gather reads only that much)."""
    for dim, (size, wanted) in enumerate(zip(x.shape, index.shape)):
        if dim != axis and size != wanted:
            if not isinstance(size, int) or not isinstance(wanted, int) or wanted > size:
                raise located_error(f"gather: the index {index.type} does not fit {x.type} outside dim {axis}")
            x = x.narrow(dim, 0, wanted)
    return x


def _arange_like_counts(counts: Any) -> Any:
    from kiln.frontend.torch_functions import arange

    return arange(counts.shape[0], dtype=counts.dtype)


def _repeat_by_counts(x: Any, repeats: Any, axis: int, output_size: int | None) -> Any:
    from kiln.frontend import eager_data_dependent
    from kiln.frontend.tensor import Tensor

    if not eager_data_dependent.is_eager(x) or (isinstance(repeats, Tensor) and not eager_data_dependent.is_eager(repeats)):
        if output_size is not None and isinstance(repeats, Tensor):
            return _repeat_by_traced_counts(x, repeats, axis, output_size)
        raise located_error("repeat_interleave with per-element counts gives a shape that depends on their values: "
                            "traced, pass an int count, or output_size=<their sum> (as torch.compile wants), or repeat "
                            "eagerly, outside the compiled function")
    return eager_data_dependent.repeat_by_counts(x, repeats, axis)


def _repeat_by_traced_counts(x: Any, counts: Any, axis: int, output_size: int) -> Any:
    """Traced counts with the length they give (``output_size``, trusted: the trace has no values to check it): output
    slot ``j`` takes slice ``i``, the number of running totals of the counts at or below ``j``."""
    from kiln.frontend.torch_functions import arange

    if counts.ndim != 1 or counts.shape[0] not in (1, x.shape[axis]):
        raise located_error(f"repeat_interleave: repeats must be one count per slice along dim {axis} ({x.shape[axis]}) "
                            f"or a single count; got {counts.type}")
    counts = counts.long().broadcast_to((x.shape[axis],))
    slots = arange(output_size, dtype=DType.of("int64"))
    positions = (counts.cumsum(0).unsqueeze(0) <= slots.unsqueeze(1)).long().sum(1)
    return x.index_select(axis, positions.clamp(max=x.shape[axis] - 1))


class OutputSizeError(TraceError, RuntimeError):
    """``repeat_interleave``'s ``output_size`` is not the length the counts give: a ``RuntimeError``, as torch's."""


def _checked_output_size(result: Any, axis: int, output_size: int | None) -> Any:
    _check_output_size(result.shape[axis], output_size)
    return result


def _check_output_size(size: Dim, output_size: int | None) -> None:
    if output_size is not None and isinstance(size, int) and size != output_size:
        error = located_error(f"repeat_interleave: Invalid output_size, expected {size} but got {output_size}: the "
                             "repeats give that length; pass their sum, or leave output_size out")
        raise OutputSizeError(*error.args)


def _times(dim: Dim, count: int) -> Dim:
    return dim * count if isinstance(dim, int) else -1
