"""The traced ``Tensor``: a symbolic value with Python operators.

Every operator emits one IR op into the graph being traced. Python numbers
mix in as constants of the tensor's dtype, as in PyTorch. Methods take
PyTorch's names, signatures and results (``x.max(1)`` is a ``(values,
indices)`` pair, ``x.argmax()`` indexes the flattened tensor); the composite
ones (``var``, ``norm``, ``logsumexp``, ``repeat``...) live in
``frontend/functional.py`` as the ``torch.*`` functions they are.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType, TensorType
from kiln.frontend.eager_values import ARRAYS, eager_array
from kiln.frontend.tensor_device import DeviceMethods, copy_of_to, dtype_of_to
from kiln.frontend.tensor_eager import EagerMethods, host_values
from kiln.frontend.tensor_extras import ExtraMethods
from kiln.frontend.tensor_inplace import InPlaceMethods, link_view
from kiln.frontend.tensor_linalg import LinalgMethods
from kiln.frontend.tensor_math import MathMethods
from kiln.frontend.tensor_more import MoreMethods
from kiln.frontend.tensor_strides import StrideMethods
from kiln.frontend.tensor_storage import StorageMethods
from kiln.frontend.lerp_dtype_checks import check_lerp_operands
from kiln.frontend.mask_dtype_checks import check_bool_mask
from kiln.frontend.reshape_targets import resolved_reshape
from kiln.frontend.matmul_shape_checks import check_bmm_shapes, check_matmul_shapes, check_mm_shapes
from kiln.frontend.torch_keywords import accept_torch_keywords
from kiln.frontend.tensor_type_call import TensorTypeCall
from kiln.frontend.torch_printoptions import printed
from kiln.frontend.torch_size import Size
from kiln.frontend.tensor_methods import TorchMethods, _flatten_args, _floating, _is_one
from kiln.frontend.torch_dtypes import get_default_dtype
from kiln.frontend.trace import TraceContext, called_from_user, located_error
from kiln.frontend.autocast import autocasts


class ValuesIndices(NamedTuple):
    """What ``x.max(dim)`` and ``x.min(dim)`` return, as PyTorch's ``torch.return_types.max``: a pair that unpacks
    (``values, indices = x.max(1)``) and names its fields."""

    values: "Tensor"
    indices: "Tensor"


class Tensor(EagerMethods, InPlaceMethods, TorchMethods, MathMethods, StrideMethods, DeviceMethods, ExtraMethods, LinalgMethods, MoreMethods,
             StorageMethods):
    """A symbolic tensor during tracing; in-place methods rebind it (``frontend/tensor_inplace.py``), more of PyTorch's
    methods are in ``frontend/tensor_methods.py`` and ``frontend/tensor_math.py``."""

    __array_priority__ = 1000  # numpy arrays on the left defer to our reflected operators

    def __init__(self, *value: Any):
        if len(value) != 1 or not isinstance(value[0], Value):  # torch.Tensor(data), torch.Tensor(2, 3): legacy
            from kiln.frontend.torch_legacy import legacy_value  # lazily: it builds tensors of this class

            value = (legacy_value(value, get_default_dtype()),)
        self._value = value[0]

    @property
    def value(self) -> Value:
        return self._value

    @property
    def type(self) -> TensorType:
        """The IR type; called, PyTorch's ``type()``/``type(dtype)`` (``frontend/tensor_type_call.py``)."""
        return TensorTypeCall(self.value.type, self)

    @property
    def shape(self) -> Size:
        """``kiln.Size``, a tuple that prints as ``torch.Size`` (``frontend/torch_size.py``)."""
        return Size(self.value.type.shape)

    @property
    def dtype(self) -> DType:
        return self.value.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return self.ndim

    def size(self, axis: int | None = None) -> Any:
        return self.shape if axis is None else self.shape[axis]

    def numel(self) -> Any:
        """The element count: an int for a static shape; with symbolic dims, a 0-d tensor counting them at run time
        (in the tensor's dtype if it is floating, so ``x.sum() / x.numel()`` traces; else int64)."""
        if all(isinstance(d, int) for d in self.shape):
            return int(np.prod(self.shape, dtype=np.int64))
        return apply("tensor.numel", self, axes=None, dtype=self.dtype if self.dtype.is_float else DType.i64)

    def __len__(self) -> int:
        """The size of the first dim, as PyTorch; a symbolic one has no Python int, so it is an error."""
        if not self.shape:
            raise TypeError(f"len() of a 0-d tensor ({self.type})")
        if not isinstance(self.shape[0], int):
            raise located_error(f"len() of {self.type}: its first dim {self.shape[0]} is symbolic; use x.shape[0] or x.numel()")
        return self.shape[0]

    def __repr__(self) -> str:
        array = eager_array(self)
        if array is None:
            return f"Tensor({self.type})"
        node = self.grad_fn
        return printed(array, grad_fn=None if node is None else type(node).__name__)  # PyTorch's text, digit for digit

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
        if isinstance(other, (int, float)) and not isinstance(other, bool):  # PyTorch's: the reciprocal times the number
            return self.reciprocal() * other
        return apply("tensor.div", other, self)

    def __pow__(self, other: Any) -> "Tensor":
        return apply("tensor.pow", self, other)

    def __rpow__(self, other: Any) -> "Tensor":
        return apply("tensor.pow", other, self)

    @autocasts("matmul")
    def __matmul__(self, other: Any) -> "Tensor":
        if isinstance(other, Tensor):
            check_matmul_shapes(self, other)
        return apply("tensor.matmul", self, other)

    @autocasts("matmul")
    def __rmatmul__(self, other: Any) -> "Tensor":
        return apply("tensor.matmul", other, self)

    def __neg__(self) -> "Tensor":
        return apply("tensor.neg", self)

    def __pos__(self) -> "Tensor":
        return self

    neg = __neg__

    def add(self, other: Any, *, alpha: Any = 1) -> "Tensor":
        """``self + alpha * other``."""
        return self + (other if _is_one(alpha) else other * alpha)

    def sub(self, other: Any, *, alpha: Any = 1) -> "Tensor":
        """``self - alpha * other``."""
        return self - (other if _is_one(alpha) else other * alpha)

    def mul(self, other: Any) -> "Tensor":
        return self * other

    def div(self, other: Any, *, rounding_mode: str | None = None) -> "Tensor":
        """True division, or rounded toward ``"floor"`` or ``"trunc"`` as PyTorch's (integers stay integers)."""
        if rounding_mode is None:
            return self / other
        if rounding_mode not in ("floor", "trunc"):
            raise located_error(f"div: rounding_mode must be None, 'floor' or 'trunc', got {rounding_mode!r}")
        from kiln.frontend.tensor_methods import _rounded_division

        return _rounded_division(self, other, rounding_mode)

    def pow(self, exponent: Any) -> "Tensor":
        return apply("tensor.pow", self, exponent)

    def square(self) -> "Tensor":
        return self * self

    def reciprocal(self) -> "Tensor":
        return apply("tensor.div", 1.0, _floating(self))

    def rsqrt(self) -> "Tensor":
        return apply("tensor.rsqrt", _floating(self))

    def sign(self) -> "Tensor":
        """-1, 0 or 1 (0 for NaN, as PyTorch); a select between constants, so its gradient is 0, as PyTorch's (a
        result that still requires grad: ``zero_gradient.py``)."""
        if self.dtype is DType.bool:
            return self
        if self.dtype is DType.u8:
            return (self > 0).to(self.dtype)  # unsigned: never below 0 (and -1 is no uint8)
        one, minus_one, zero = (apply("tensor.constant", value=np.asarray(v, self.dtype.numpy)) for v in (1, -1, 0))
        if self.dtype.is_float and self.requires_grad:
            from kiln.frontend.zero_gradient import zeros_on_gradient_path  # lazily: it builds on the tensor

            zero = zeros_on_gradient_path(self)
        return apply("tensor.where", self > 0, one, apply("tensor.where", self < 0, minus_one, zero))

    def lerp(self, end: Any, weight: Any) -> "Tensor":
        """``self + weight (end - self)``, from the nearer end as PyTorch computes it (``lerp(a, b, 1)`` is exactly ``b``)."""
        check_lerp_operands(self, end, weight)
        difference = end - self
        if not isinstance(weight, Tensor):
            return self + difference * weight if abs(weight) < 0.5 else end - difference * (1 - weight)
        near_start = apply("tensor.less", apply("tensor.abs", weight), 0.5)
        return apply("tensor.where", near_start, self + difference * weight, end - difference * (1 - weight))

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

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        """Elementwise, as PyTorch's (``mask == 0``). Outside a trace, or against something that is not a number,
        array or tensor (``t in [None, ...]``), identity as for any object, so parameters stay usable in lists and
        sets."""
        if not _comparable(self, other):
            return NotImplemented
        return self.eq(other)

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        if not _comparable(self, other):
            return NotImplemented
        return self.ne(other)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        array = eager_array(self)
        if array is None:  # outside a trace, a buffer's or parameter's own (``if self.inited:``)
            array = host_values(self)
        if array is None:  # traced: kiln.compile specializes on a value computed from its inputs (value_guards.py)
            from kiln.frontend.tensor_methods import traced_values  # lazily: the methods build on the tensor

            array = traced_values(self)
        if array is not None:
            if array.size != 1:
                raise RuntimeError(f"the truth value of a Tensor with {array.size} elements is ambiguous; use .any() or .all()")
            return bool(array)
        raise TraceError(
            "a traced Tensor has no concrete truth value: Python control flow on a value the graph computes (from "
            "trained weights, a random draw, or in a trace other than kiln.compile's) cannot be traced; use "
            "kiln.where(condition, a, b) instead"
        )

    # methods ----------------------------------------------------------------
    @property
    def T(self) -> "Tensor":
        return self.transpose()

    def detach(self) -> "Tensor":
        """The same values with no gradient flowing back through them (``tensor.stop_gradient``), as PyTorch's. Outside
        a trace, a new leaf sharing the array, as PyTorch's: a later ``backward()`` neither walks nor recomputes the ops
        before it (``repackage_hidden``'s ``h.detach()`` between two batches, after the weights were updated in place).
        It is a view of this tensor, as torch's shares its storage: ``x.detach().zero_()`` zeroes ``x``
        (``frontend/view_writes.py``)."""
        context = TraceContext.current()
        if context.eager:
            detached = Tensor(context.without_gradient(checked_value(self)))  # not the old values of a stale tensor
        else:
            detached = apply("tensor.stop_gradient", self)
        link_view(detached, self, "tensor.stop_gradient", {})  # shares the storage: a write to it writes this tensor
        return detached

    @property
    def data(self) -> "Tensor":
        """PyTorch's ``.data``: the values detached from the graph (``output.data.max(1)``, ``action.data``), a view
        of the tensor as ``detach()``'s, so a write through it writes the tensor (``target.data.copy_(v)``), but with a
        version counter of its own, as PyTorch's (``frontend/version_counter.py``). A ``Parameter``'s ``.data`` is its
        array (``frontend/module.py``)."""
        alias = self.detach()
        alias._data_alias = True
        return alias

    @data.setter
    def data(self, new: "Tensor") -> None:
        """PyTorch's ``x.data = y`` and ``x.data += y`` (``frontend/data_assignment.py``)."""
        from kiln.frontend.data_assignment import assign_data  # lazily: it writes through tensors of this class

        assign_data(self, new)

    def transpose(self, dim0: int | None = None, dim1: int | None = None) -> "Tensor":
        """``x.transpose()`` reverses the axes; ``x.transpose(0, 1)`` swaps two, as in PyTorch."""
        perm = list(reversed(range(self.ndim)))
        if dim0 is not None or dim1 is not None:
            from kiln.frontend.functional import _dims

            if dim0 is None or dim1 is None:
                raise located_error(f"transpose swaps two dims: give both, got {dim0} and {dim1}")
            perm = list(range(self.ndim))
            (first,), (second,) = _dims("transpose", self, dim0), _dims("transpose", self, dim1)
            perm[first], perm[second] = perm[second], perm[first]
        return apply("tensor.transpose", self, perm=tuple(perm))

    def permute(self, *dims: int) -> "Tensor":
        """``x.permute(2, 0, 1)``; a dim may count from the end (``w.permute(0, -1, -2)``), as in PyTorch."""
        from kiln.frontend.functional import _one_dim

        order = tuple(_flatten_args(dims))
        if len(order) != self.ndim:
            raise located_error(f"permute(): number of dimensions in the tensor input does not match the length of the "
                                f"desired ordering of dimensions i.e. input.dim() = {self.ndim} is not equal to "
                                f"len(dims) = {len(order)}")
        perm = tuple(_one_dim("permute", self, dim) for dim in order)
        if len(set(perm)) != len(perm):
            raise located_error(f"permute(): duplicate dims are not allowed (got {order} for {self.type})")
        return apply("tensor.transpose", self, perm=perm)

    def reshape(self, *shape: Any) -> "Tensor":
        return apply("tensor.reshape", self, shape=resolved_reshape(tuple(self.shape), tuple(_flatten_args(shape))))

    def view_as(self, other: "Tensor") -> "Tensor":
        return self.reshape(other.shape)

    reshape_as = view_as

    def expand_as(self, other: "Tensor") -> "Tensor":
        return self.expand(other.shape)

    def type_as(self, other: "Tensor") -> "Tensor":
        return self if self.dtype is other.dtype else self.to(other.dtype)

    def swapaxes(self, axis0: int, axis1: int) -> "Tensor":
        return self.transpose(axis0, axis1)

    swapdims = swapaxes

    def movedim(self, source: int | tuple[int, ...], destination: int | tuple[int, ...]) -> "Tensor":
        from kiln.frontend.functional import movedim

        return movedim(self, source, destination)

    moveaxis = movedim

    def repeat(self, *sizes: Any) -> "Tensor":
        from kiln.frontend.functional import _repeat

        return _repeat(self, *sizes)

    def flip(self, *dims: Any) -> "Tensor":
        from kiln.frontend.functional import flip

        return flip(self, tuple(_flatten_args(dims)))

    def narrow(self, dim: int, start: int, length: int) -> "Tensor":
        from kiln.frontend.functional import _narrow

        return _narrow(self, dim, start, length)

    def unbind(self, dim: int = 0) -> tuple["Tensor", ...]:
        from kiln.frontend.functional import unbind

        return unbind(self, dim)

    def matmul(self, other: "Tensor") -> "Tensor":
        return self @ other

    def mm(self, mat2: "Tensor") -> "Tensor":
        check_mm_shapes(self, mat2)
        return self @ mat2

    def bmm(self, mat2: "Tensor") -> "Tensor":
        check_bmm_shapes(self, mat2)
        return self @ mat2

    def softmax(self, dim: int, dtype: Any = None) -> "Tensor":
        return apply("nn.softmax", self if dtype is None else self.to(dtype), axis=dim)

    def log_softmax(self, dim: int, dtype: Any = None) -> "Tensor":
        return apply("nn.log_softmax", self if dtype is None else self.to(dtype), axis=dim)

    def sum(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False, *, dtype: Any = None) -> "Tensor":
        """A bool or integer tensor sums in int64, as PyTorch's (``pred.eq(target).sum()`` counts); ``dtype`` casts first."""
        own = self.dtype
        source = self.to(dtype) if dtype is not None else self.long() if own is not DType.i64 and not own.is_float else self
        return apply("tensor.reduce_sum", source, axes=dim, keepdims=keepdim)

    def mean(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False, *, dtype: Any = None) -> "Tensor":
        """``dtype`` casts first, as PyTorch's (``half.mean(dtype=kiln.float32)``)."""
        return apply("tensor.reduce_mean", self if dtype is None else self.to(dtype), axes=dim, keepdims=keepdim)

    def amax(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> "Tensor":
        return apply("tensor.reduce_max", self, axes=dim, keepdims=keepdim)

    def max(self, dim: "int | Tensor | None" = None, keepdim: bool = False) -> "Tensor | ValuesIndices":
        """PyTorch's three ``max``: ``x.max()`` the largest element (ties share the gradient), ``x.max(dim)`` the pair
        ``(values, indices)`` (the first largest takes the gradient), ``x.max(other)`` the elementwise maximum."""
        from kiln.frontend.functional import _extremum

        return _extremum("max", self, dim, keepdim)

    def min(self, dim: "int | Tensor | None" = None, keepdim: bool = False) -> "Tensor | ValuesIndices":
        """``max``'s mirror: ``x.min()``, ``x.min(dim) -> (values, indices)``, ``x.min(other)``."""
        from kiln.frontend.functional import _extremum

        return _extremum("min", self, dim, keepdim)

    @autocasts("prod")
    def prod(self, dim: int | None = None, keepdim: bool = False, dtype: Any = None) -> "Tensor":
        from kiln.frontend.functional import prod

        return prod(self, dim, keepdim, dtype=dtype)

    def var(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: float | None = None) -> "Tensor":
        from kiln.frontend.functional import var

        return var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim: Any = None, unbiased: bool | None = None, keepdim: bool = False, *, correction: float | None = None) -> "Tensor":
        from kiln.frontend.functional import std

        return std(self, dim, unbiased, keepdim, correction=correction)

    def norm(self, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None) -> "Tensor":
        from kiln.frontend.functional import norm

        return norm(self, p, dim, keepdim, dtype)

    def logsumexp(self, dim: Any, keepdim: bool = False) -> "Tensor":
        from kiln.frontend.functional import logsumexp

        return logsumexp(self, dim, keepdim)

    def all(self, dim: Any = None, keepdim: bool = False) -> "Tensor":
        from kiln.frontend.functional import _all_or_any

        return _all_or_any("all", self, dim, keepdim)

    def any(self, dim: Any = None, keepdim: bool = False) -> "Tensor":
        from kiln.frontend.functional import _all_or_any

        return _all_or_any("any", self, dim, keepdim)

    def exp(self) -> "Tensor":
        return apply("tensor.exp", _floating(self))

    def log(self) -> "Tensor":
        return apply("tensor.log", _floating(self))

    def sqrt(self) -> "Tensor":
        return apply("tensor.sqrt", _floating(self))

    def tanh(self) -> "Tensor":
        return apply("tensor.tanh", _floating(self))

    def sigmoid(self) -> "Tensor":
        return apply("tensor.sigmoid", _floating(self))

    def relu(self) -> "Tensor":
        return apply("tensor.relu", self)

    def to(self, *args: Any, **kwargs: Any) -> "Tensor":
        """PyTorch's ``to``: ``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)``, ``dtype=``; a device
        changes nothing (``frontend/tensor_device.py``). As PyTorch's, a call that changes nothing returns this
        tensor itself (an in-place write to the result writes it), unless ``copy=True``."""
        dtype = dtype_of_to(args, kwargs)
        if dtype is None or DType.of(dtype) == self.dtype:
            return self.clone() if copy_of_to(args, kwargs) else self
        dtype = DType.of(dtype)
        if dtype.is_complex:  # x.to(kiln.cfloat): a complex tensor with a zero imaginary part
            from kiln.frontend.complex_tensor import real_to_complex

            return real_to_complex(self, dtype)
        return apply("tensor.cast", self, dtype=dtype)

    def float(self) -> "Tensor":
        return self.to(DType.f32)

    def broadcast_to(self, *shape: Any) -> "Tensor":
        """``shape`` may hold -1: that dim keeps its size (aligned from the right), as PyTorch's ``expand``."""
        target = tuple(_flatten_args(shape))
        offset = len(target) - self.ndim
        if any(isinstance(d, int) and d == -1 and i < offset for i, d in enumerate(target)):
            raise located_error(f"expand: -1 is not allowed for a new leading dim, in {target} for {self.type}")
        target = tuple(self.shape[i - offset] if isinstance(d, int) and d == -1 else d for i, d in enumerate(target))
        return apply("tensor.broadcast_to", self, shape=target)

    def expand(self, *shape: Any) -> "Tensor":
        """``broadcast_to`` as PyTorch's expanded view: writes through it follow (or are refused) as torch's."""
        from kiln.frontend.view_writes import expanded_view

        return expanded_view(self.broadcast_to(*shape), self)

    # indexing and the CNN/transformer methods (``frontend/functional_nn.py``) ------
    def __getitem__(self, index: Any) -> "Tensor":
        from kiln.frontend.functional_nn import getitem

        return getitem(self, index)

    def abs(self) -> "Tensor":
        return apply("tensor.abs", self)

    __abs__ = abs  # abs(t), as PyTorch's

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> "Tensor":
        """The index of the first largest element along ``dim``; of the flattened tensor without one, as PyTorch."""
        from kiln.frontend.functional import _argmax

        return _argmax(self, dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> "Tensor":
        from kiln.frontend.functional import argmin

        return argmin(self, dim, keepdim)

    def amin(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> "Tensor":
        return apply("tensor.reduce_min", self, axes=dim, keepdims=keepdim)

    def clamp(self, min: Any = None, max: Any = None) -> "Tensor":  # noqa: A002
        """``min(max(x, min), max)``. Number bounds are one ``tensor.clip``; a tensor bound is a ``where``, which
        broadcasts and, as PyTorch, sends the gradient to the bound where it wins, to ``x`` elsewhere."""
        if not isinstance(min, Tensor) and not isinstance(max, Tensor):
            target = promoted_dtype("tensor.clip", (self, min, max))
            source = self if target is self.dtype else self.to(target)  # int_tensor.clamp(min=0.5) is float, as torch
            return apply("tensor.clip", source, min=min, max=max)
        result = self
        if min is not None:
            result = apply("tensor.where", apply("tensor.less", result, min), min, result)
        if max is not None:
            result = apply("tensor.where", apply("tensor.greater", result, max), max, result)
        return result

    clip = clamp

    def clamp_min(self, min: Any) -> "Tensor":  # noqa: A002
        return self.clamp(min=min)

    def clamp_max(self, max: Any) -> "Tensor":  # noqa: A002
        return self.clamp(max=max)

    def where(self, condition: "Tensor", other: Any) -> "Tensor":
        """``torch.where(condition, self, other)``."""
        from kiln.frontend.functional import bool_condition

        return apply("tensor.where", bool_condition(condition), self, other)

    def masked_fill(self, mask: "Tensor", value: Any) -> "Tensor":
        """``value`` where ``mask`` (which broadcasts to this tensor's shape) is True; the gradient flows elsewhere."""
        from kiln.frontend.fill_values import fill_value  # lazily: kept out of the module's import block

        check_bool_mask(mask, "masked_fill_")
        value = fill_value(value, self.dtype, "masked_fill")
        if isinstance(value, Tensor) and value.dtype is not self.dtype:
            value = value.to(self.dtype)
        result = apply("tensor.where", mask, value, self)
        if result.shape != self.shape:
            raise located_error(f"masked_fill: mask {mask.type} and value must broadcast to {self.type}, not widen it to {result.type}")
        return result

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


def eager_tensor(array: np.ndarray) -> Tensor:
    """Outside a trace, an eager tensor holding ``array`` (a leaf: no op made it); what ``kiln.tensor(data)`` gives."""
    value = Value(TensorType.of_array(array), None, 0)
    ARRAYS[value] = array
    return Tensor(value)


def _comparable(tensor: Tensor, other: Any) -> bool:
    """Whether ``tensor == other`` compares elementwise: against a tensor, array or number, while tracing or when either
    side is an eager tensor. Outside a trace a ``Parameter`` compares elementwise with a number or array
    (``kiln.tensor(x, requires_grad=True) == 0``), and with another parameter elementwise where the user's code compares
    them (``(ema.weight == model.weight).all()``, as PyTorch's) but by identity where kiln's own code does, so
    parameters stay usable in kiln's lists and sets (``p in optimizer_params``; in PyTorch that raises for a
    parameter of more than one element, and it does here too from the user's code)."""
    eager = eager_array(tensor) is not None or (isinstance(other, Tensor) and eager_array(other) is not None)
    parameter_with_values = "_data" in tensor.__dict__ and (not isinstance(other, Tensor) or _parameters_compared_by_user(other))
    return (TraceContext.active() or eager or parameter_with_values) and \
        isinstance(other, (Tensor, np.ndarray, np.generic, int, float, bool))


def _parameters_compared_by_user(other: Tensor) -> bool:
    """``other`` is a parameter too, and ``==`` was called from outside kiln (frames: this, ``_comparable``,
    ``__eq__``, its caller)."""
    return "_data" in other.__dict__ and called_from_user(depth=4)


def _check_rank(method: str, rank: int, *tensors: Tensor) -> None:
    if any(t.ndim != rank for t in tensors):
        raise located_error(f"{method} needs {rank}-D operands, got {' and '.join(str(t.type) for t in tensors)}; use matmul to broadcast")


accept_torch_keywords(Tensor)  # x.sum(axis=-1, keepdims=True), x.permute(dims=(1, 0)) as PyTorch's (frontend/torch_keywords.py)

from kiln.frontend.op_dispatch import apply, checked_value, promoted_dtype  # noqa: E402  (needs Tensor: see there)
