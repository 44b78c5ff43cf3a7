"""Op dispatch: ``apply`` emits one IR op on tensors, Python numbers and arrays, the way every ``Tensor`` method and
``F.*`` function reaches the graph (eagerly run at once outside a trace). Numbers become constants of the tensors'
dtype and mixed operands are promoted as PyTorch promotes them; an op's result comes back as ``Tensor``(s), linked as
a view of its first operand where PyTorch's op makes one.

``Tensor`` (``frontend/tensor.py``) and this module need each other: each imports the other at its end, after its
own names are defined, so either can be imported first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType
from kiln.frontend.eager_values import ARRAYS, eager_array
from kiln.frontend.tensor_inplace import VIEW_OPS, check_fresh, link_view
from kiln.frontend.torch_array import traced_target
from kiln.frontend.torch_dtypes import get_default_dtype, result_type
from kiln.frontend.trace import TraceContext, located_error, user_location


def apply(op_name: str, *operands: Any, **attrs: Any) -> Any:
    """Emit ``op_name`` on tensors (numbers become constants of the tensors' dtype, a non-bool one first: the values'
    of ``where(mask, x, 0.5)``, not the mask's); returns Tensor(s)."""
    context = TraceContext.current()
    if context.eager:
        number_dtype = _plain_number_dtype(op_name, operands)
        if number_dtype is not None:  # the common case: what the general path would do, without its steps
            location = user_location(1)  # the user's line (past this frame), once for the op and its constants
            values = _plain_values(context, operands, number_dtype, location)
            return _tensors_of(context, op_name, operands, attrs, context.emit_values(op_name, values, attrs, location))
    if op_name in PROMOTING_OPS:
        operands = promoted(op_name, operands)
    if _has_constant(operands):
        if _has_complex_number(operands):  # x * 1j: the tensor becomes complex (frontend/complex_tensor.py)
            from kiln.frontend.complex_tensor import with_complex_number

            return with_complex_number(op_name, operands)
        dtype = _constant_dtype(operands)
        if dtype.is_half and op_name in NUMBER_IN_FLOAT32_OPS and _has_number(operands):
            return apply(op_name, *[o.to(DType.f32) if isinstance(o, Tensor) else o for o in operands]).to(dtype)
        values = [to_value(context, o, dtype) for o in operands]
    elif context.eager:  # eager tensors alone (the common case): to_value's first case, inline
        values = [o.value if "_stale" not in o.__dict__ else checked_value(o) for o in operands]
    else:
        values = [to_value(context, o, None) for o in operands]
    return _tensors_of(context, op_name, operands, attrs, context.emit(op_name, *values, **attrs))


def _tensors_of(context: TraceContext, op_name: str, operands: tuple[Any, ...], attrs: dict[str, Any], result: Any) -> Any:
    """The tensor (or tensors) of ``op_name``'s result: without a gradient under ``no_grad``, linked as a view of its
    first operand where PyTorch's op makes one."""
    if not context.grad_enabled:
        result = tuple(map(context.without_gradient, result)) if isinstance(result, tuple) else context.without_gradient(result)
    if isinstance(result, tuple):
        return tuple([tensor_of(r) for r in result])
    tensor = _new_tensor(Tensor)  # _tensor_of, inline
    tensor._value = result
    if op_name in VIEW_OPS and isinstance(operands[0], Tensor):
        link_view(tensor, operands[0], op_name, attrs)
    return tensor


def _plain_number_dtype(op_name: str, operands: tuple[Any, ...]) -> Any:
    """Whether ``apply``'s general path would only read the operands' values (and make its numbers constants): every
    operand a tensor or a Python float or int, the tensors such that ``promoted`` leaves them alone (one floating
    dtype), no number meeting a half tensor in ``mul``/``div``. Then the dtype ``_constant_dtype`` gives the numbers
    (``_NO_NUMBERS`` where there are none); else None, and the general path judges."""
    numbers = False
    for operand in operands:
        kind = type(operand)
        if kind is float or kind is int:
            numbers = True
        elif kind is not Tensor and not isinstance(operand, Tensor):
            return None  # an array, a bool, a complex or NumPy number, a symbolic dim...
    if op_name in PROMOTING_OPS and not _promotes_nothing(op_name, operands):
        return None
    if not numbers:
        return _NO_NUMBERS
    dtype = _constant_dtype(operands)
    return None if dtype.is_half and op_name in NUMBER_IN_FLOAT32_OPS else dtype


_NO_NUMBERS = object()
"""``_plain_number_dtype`` of tensors alone."""


def _plain_values(context: TraceContext, operands: tuple[Any, ...], number_dtype: Any, location: Any) -> list[Value]:
    """The values of operands ``_plain_number_dtype`` passed: the tensors' own, each number a constant (``to_value``'s)."""
    if number_dtype is _NO_NUMBERS:
        return [o.value if "_stale" not in o.__dict__ else checked_value(o) for o in operands]
    return [_number_value(context, o, number_dtype, location) if type(o) is float or type(o) is int else
            o.value if "_stale" not in o.__dict__ else checked_value(o) for o in operands]


def _promotes_nothing(op_name: str, operands: tuple[Any, ...]) -> bool:
    """``promoted``'s common case, with no array among ``operands``: its tensors (past ``where``'s condition) share one
    floating dtype, which is the target whatever the numbers are."""
    dtype = None
    for operand in operands[1:] if op_name == "tensor.where" else operands:
        kind = type(operand)
        if kind is float or kind is int:
            continue
        operand_dtype = operand._value.type.dtype if kind is Tensor else operand.dtype  # Tensor.dtype, inline
        if dtype is None:
            dtype = operand_dtype
            if dtype not in _FLOATING:
                return False
        elif operand_dtype is not dtype:
            return False
    return dtype is not None


def _number_value(context: TraceContext, number: float | int, dtype: DType, location: Any) -> Value:
    """``to_value`` of a Python float or int in ``dtype``: a constant, eagerly run at once, made at ``location``."""
    bound = _ROUNDS_TO_INF.get(dtype)
    if bound is not None:  # _scalar_in's rounding, on the Python number (NaN stays NaN)
        array = np.asarray(math.copysign(math.inf, number) if abs(number) >= bound else number, np.float32)
        return context.emit_constant(array.astype(dtype.numpy, copy=False), location)
    array = np.asarray(number)
    if array.dtype.kind not in "fiub":  # an int past int64: to_value says what it makes of it
        return to_value(context, number, dtype)
    return context.emit_constant(array.astype(dtype.numpy), location)


def _scalar_in(array: np.ndarray, dtype: DType) -> np.ndarray:
    """A 0-d array of a Python number in ``dtype``; a float past the dtype's range is inf, quietly, as torch rounds
    it (``x_f32 * 1e39``: NumPy's cast warns of the overflow), with one comparison on the common path. A half dtype's
    goes through float32, as c10 builds ``Half`` and ``BFloat16`` from a float (``1 + 2**-8 + 2**-30`` is 1.0 in
    bfloat16, where a direct rounding gives 1.0078)."""
    bound = _ROUNDS_TO_INF.get(dtype)
    if bound is None:
        return array.astype(dtype.numpy)
    if array.dtype.kind == "f" and abs(float(array)) >= bound:
        array = np.asarray(np.copysign(np.inf, array))
    return array.astype(np.float32).astype(dtype.numpy, copy=False)


_ROUNDS_TO_INF = {DType.f32: (2 - 2**-24) * 2.0**127, DType.f16: 65520.0, DType.bf16: (2 - 2**-8) * 2.0**127}
"""Per narrow float dtype, the magnitude from which a float rounds to inf (its largest finite value and half an ulp)."""


def checked_value(tensor: Tensor) -> Value:
    check_fresh(tensor)  # raises: the tensor is stale
    return tensor.value


def tensor_of(value: Value) -> Tensor:
    """``Tensor(value)`` without ``__init__``'s check for PyTorch's legacy constructor forms (an op's result)."""
    tensor = _new_tensor(Tensor)
    tensor._value = value
    return tensor


_new_tensor = object.__new__


def _has_constant(operands: tuple[Any, ...]) -> bool:
    """Whether an operand is not a tensor (a number or array that becomes a constant)."""
    for operand in operands:
        if not isinstance(operand, Tensor):
            return True
    return False


NUMBER_IN_FLOAT32_OPS = frozenset({"tensor.mul", "tensor.div"})
"""Ops whose Python number meets a half tensor in float32, as PyTorch's CPU kernels keep it (``x * 0.3`` is
``float32(x) * 0.3f`` rounded once; rounding 0.3 to bfloat16 first changed ~half the products). add/sub round the
number to the tensor's dtype in PyTorch too."""


def _has_complex_number(operands: tuple[Any, ...]) -> bool:
    return not _COMPLEX_NUMBER_TYPES.isdisjoint(map(type, operands))


_COMPLEX_NUMBER_TYPES = frozenset({complex, np.complex64, np.complex128, np.clongdouble})


def _has_number(operands: tuple[Any, ...]) -> bool:
    return any(isinstance(o, (int, float)) and not isinstance(o, bool) for o in operands)


def _constant_dtype(operands: tuple[Any, ...]) -> DType:
    """The dtype numbers among ``operands`` take: the first non-bool tensor's, else the first tensor's, else float32."""
    dtypes = [o.dtype for o in operands if isinstance(o, Tensor)]
    return next((d for d in dtypes if d is not DType.bool), dtypes[0] if dtypes else DType.f32)


PROMOTING_OPS = frozenset({"tensor.add", "tensor.sub", "tensor.mul", "tensor.div", "tensor.pow", "tensor.maximum", "tensor.minimum",
                           "tensor.less", "tensor.less_equal", "tensor.greater", "tensor.greater_equal", "tensor.equal",
                           "tensor.not_equal", "tensor.where", "tensor.concat",
                           "nn.mse", "nn.l1", "nn.smooth_l1"})  # PyTorch promotes these losses' input and target


def promoted(op_name: str, operands: tuple[Any, ...]) -> tuple[Any, ...]:
    """PyTorch's type promotion for arithmetic, comparisons and ``where``'s values (its condition stays bool): tensors
    of mixed dtypes compute in the widest (float over int over bool: ``x_f64 + torch.zeros(3)``, ``counts * x``);
    integer or bool tensors meeting a Python float (``lengths * 0.5``) or divided (true division) in the default float
    dtype (float32 unless ``kiln.set_default_dtype`` says otherwise); bool
    tensors meeting a Python int (``mask * 2``) in int64. A Python number alone takes the tensors' dtype, and so does
    a 0-d tensor of the same kind (``uint8_images * torch.tensor(2)`` stays uint8: ``torch_dtypes.result_type``)."""
    first = 1 if op_name == "tensor.where" else 0
    values = operands[first:]
    if any(isinstance(o, np.ndarray) for o in values):  # p.grad, p.data: tensors in PyTorch, promoted as tensors
        values = tuple(map(_array_as_tensor, values))
        operands = operands[:first] + values
    dtypes = [o.dtype for o in values if isinstance(o, Tensor)]
    if not dtypes:
        return operands
    if dtypes[0] in _FLOATING and dtypes.count(dtypes[0]) == len(dtypes):
        return operands  # one floating dtype (the common case): it is the target, whatever the numbers are
    target = promoted_dtype(op_name, values)
    if all(d is target for d in dtypes):
        return operands
    return operands[:first] + tuple(o.to(target) if isinstance(o, Tensor) and o.dtype is not target else o for o in values)


_FLOATING = (DType.f32, DType.f64, DType.f16, DType.bf16)


def _array_as_tensor(operand: Any) -> Any:
    """A NumPy array operand as the tensor it stands for: a parameter's ``.data`` in a trace, its traced value; any
    other of a real or bool dtype, a tensor of its values (``(p.data > 0).sum(1) + bias`` is float, as PyTorch's)."""
    owner = traced_target(operand)
    if owner is not None:
        return owner.detach()
    if not isinstance(operand, np.ndarray) or operand.dtype.kind not in "biuf":
        return operand
    return apply("tensor.constant", value=np.asarray(operand).view(np.ndarray))  # traced: a constant, not a lifted input


def promoted_dtype(op_name: str, values: tuple[Any, ...]) -> DType:
    """``torch.result_type`` of the tensors and Python numbers among ``values``; true division of integers in the
    default float dtype (kiln.set_default_dtype's, float32 unless set)."""
    dtype = result_type(*(value for value in values if isinstance(value, (Tensor, int, float))))
    return get_default_dtype() if op_name == "tensor.div" and not dtype.is_float else dtype


def to_value(context: TraceContext, operand: Any, dtype: DType | None) -> Value:
    """``operand`` as an IR value: a tensor's own (an eager tensor in a trace: a constant), a number or array as a
    constant, a Python scalar in ``dtype`` (weakly typed, as in PyTorch; ``dtype`` may be None only for a tensor)."""
    if isinstance(operand, Tensor):
        check_fresh(operand)
        value = None if context.eager else operand.__dict__.get("_value")
        array = None if value is None else ARRAYS.get(value)
        if array is None:
            return operand.value
        if context.lifting is not None and context.lifting.lifts_tensor(operand):  # kiln.compile: fed at each call
            return context.lifting.lifted_input(context, operand, array)
        return context.emit("tensor.constant", value=eager_array(operand))  # an eager tensor in a trace: its values now
    owner = traced_target(operand)
    if owner is not None and not isinstance(owner, Tensor):  # p.data[i] in a trace: p's value there now
        return owner.detach().value
    if owner is not None:  # p.data as an operand in a trace: p's value now, without a gradient (not a constant)
        return context.without_gradient(context.current_value_of(owner))
    array = np.asarray(operand)
    if array.dtype.kind in "fiub" and array.ndim == 0:
        array = _scalar_in(array, dtype)  # Python scalars are weakly typed, as in PyTorch
    if array.dtype.kind in "US":
        from kiln.frontend.symbolic_dims import SymbolicDim, symbolic_scalar

        if isinstance(operand, SymbolicDim):  # a batch size traced once for every size: its run-time size
            return symbolic_scalar(str(operand), dtype or DType.i64).value
        from kiln.frontend.tensor_operand_checks import TensorOperandError

        raise located_error(f"unsupported operand type: str ({operand!r}); a tensor op takes a tensor or a number",
                            kind=TensorOperandError)
    return context.emit("tensor.constant", value=array)


from kiln.frontend.tensor import Tensor  # noqa: E402  (at the end: the tensor module imports this one at its end)
