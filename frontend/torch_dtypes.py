"""``torch``'s dtype queries for kiln's dtypes (bool, uint8, int8, int16, int32, int64, float16, bfloat16, float32,
float64): ``is_tensor``,
``result_type``, ``promote_types``, ``can_cast``, ``finfo``/``iinfo`` and the default float dtype.

```python
kiln.result_type(int_tensor, 2.5)         # kiln.float32: a Python float takes the default float dtype
kiln.promote_types(kiln.int64, kiln.float32)   # kiln.float32, as torch's (a float of any width wins)
kiln.finfo(kiln.float64).eps              # 2.220446049250313e-16
kiln.set_default_dtype(kiln.float64)      # kiln.tensor([1.5]), kiln.zeros(3)... now float64
cast_array(np.array([1 + 2**-11 + 2**-40]), DType.f16)   # [1.0], as torch.tensor(..., dtype=torch.float16)
```

Promotion is PyTorch's: a complex dtype beats a floating one beats an integer one beats bool whatever their widths
(but float64 with complex64 is complex128, and a float64 tensor times ``1j`` too); within a kind the
wider wins (uint8 and int8 meet in int16, which holds both); and a tensor with dims outranks a 0-d tensor, which outranks a Python number, unless the lower-ranked
operand is of a higher kind (then its kind decides, at the default width for a Python number).

Integer arithmetic wraps at the dtype's width as torch's (uint8 200 + 100 is 44); a float cast to an integer
truncates toward zero. A float outside the integer's range (-1.5 or 300.0 to uint8) is undefined behaviour in torch
(C++'s conversion): kiln gives NumPy's result there, which may differ, and no test pins it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.types import DType
from kiln.frontend.trace import located_error

_KIND = {DType.bool: 0, DType.u8: 1, DType.i8: 1, DType.i16: 1, DType.i32: 1, DType.i64: 1,
         DType.f16: 2, DType.bf16: 2, DType.f32: 2, DType.f64: 2, DType.c64: 3, DType.c128: 3}
_WIDTH = {DType.bool: 1, DType.u8: 1, DType.i8: 1, DType.i16: 2, DType.i32: 4, DType.i64: 8,
          DType.f16: 2, DType.bf16: 2, DType.f32: 4, DType.f64: 8, DType.c64: 8, DType.c128: 16}

_default_float = [DType.f32]
"""The default float dtype (a one-element list: module state that ``set_default_dtype`` replaces)."""


def get_default_dtype() -> DType:
    return _default_float[0]


def set_default_dtype(d: Any) -> None:
    """The dtype of Python floats made into tensors (``kiln.tensor``, ``zeros``, ``arange`` with float bounds...):
    a float dtype (float16, bfloat16, float32 or float64), as PyTorch's."""
    dtype = DType.of(d)
    if not dtype.is_float:
        raise located_error(f"set_default_dtype takes a float dtype (float16, bfloat16, float32 or float64), got {d!r}")
    _default_float[0] = dtype


def cast_array(array: Any, dtype: Any) -> np.ndarray:
    """``array`` as ``dtype``, rounded as PyTorch rounds: a float64 to float16 goes through float32 (c10's ``Half`` is
    built from a ``float``), a double rounding NumPy's direct cast skips, so ``1 + 2**-11 + 2**-40`` is 1.0 as in
    torch, not NumPy's 1.001. bfloat16 too: some ``ml_dtypes`` builds cast float64 to it directly (on an AVX-512
    BF16 machine ``1 + 2**-8 + 2**-40`` became 1.0078 where torch gives 1.0)."""
    array, kind = np.asarray(array), DType.of(dtype)
    target = np.dtype(kind.numpy)
    if kind.is_half and array.dtype == np.float64:
        array = array.astype(np.float32)
    with np.errstate(over="ignore"):  # past the dtype's range is inf, silently, as in torch
        return array.astype(target)


_TENSOR: list[type] = []
"""``Tensor``, imported once on first use (tensor.py imports this module)."""


def is_kiln_tensor(obj: Any) -> bool:
    """Whether ``obj`` is a ``kiln.Tensor`` (kiln's own checks: a parameter's array is not one)."""
    if not _TENSOR:
        from kiln.frontend.tensor import Tensor

        _TENSOR.append(Tensor)
    return isinstance(obj, _TENSOR[0])


def is_tensor(obj: Any) -> bool:
    """``torch.is_tensor``: a ``kiln.Tensor``, or a parameter's ``.data`` or ``.grad`` (a ``TorchArray``, PyTorch's
    tensor there)."""
    from kiln.frontend.torch_array import TorchArray  # lazily: torch_array imports this module

    return is_kiln_tensor(obj) or isinstance(obj, TorchArray)


def promote_types(type1: Any, type2: Any) -> DType:
    """The smallest dtype both cast to safely: the higher kind (bool < int < float), then the wider."""
    a, b = DType.of(type1), DType.of(type2)
    _check_kind(a), _check_kind(b)
    if _KIND[a] != _KIND[b]:
        high, low = (a, b) if _KIND[a] > _KIND[b] else (b, a)
        return DType.c128 if high is DType.c64 and low is DType.f64 else high  # float64 with complex64: complex128
    if {a, b} == {DType.f16, DType.bf16}:
        return DType.f32  # neither holds the other (PyTorch's rule)
    if {a, b} == {DType.u8, DType.i8}:
        return DType.i16  # neither holds the other; int16 holds both (PyTorch's rule)
    return a if _WIDTH[a] >= _WIDTH[b] else b


def can_cast(from_: Any, to: Any) -> bool:
    """PyTorch's casting rule: anything but a float to an integer or bool, or an integer to bool."""
    source, target = DType.of(from_), DType.of(to)
    _check_kind(source), _check_kind(target)
    return _KIND[source] <= _KIND[target]


def result_type(*operands: Any) -> DType:
    """The dtype of an arithmetic op on ``operands`` (tensors and Python numbers), by the rule above."""
    ranked = [_ranked(operand) for operand in operands]
    kind = max(_KIND[dtype] for dtype, _ in ranked)
    top = max(rank for dtype, rank in ranked if _KIND[dtype] == kind)
    candidates = [dtype for dtype, rank in ranked if _KIND[dtype] == kind and rank == top]
    result = candidates[0]
    for dtype in candidates[1:]:
        result = promote_types(result, dtype)
    return _complex_with_floats(result, top, ranked) if result.is_complex else result


def _complex_with_floats(result: DType, top: int, ranked: list[tuple[DType, int]]) -> DType:
    """A complex result from lower-ranked operands widens to hold the higher-ranked floats, as torch's: a float64
    tensor times ``1j`` is complex128 (the float's complex counterpart), times a 0-d complex64 tensor too."""
    floats = [dtype for dtype, rank in ranked if _KIND[dtype] == 2 and rank > top]
    if not floats:
        return result
    widest = floats[0]
    for dtype in floats[1:]:
        widest = promote_types(widest, dtype)
    return widest.to_complex() if top == 0 else promote_types(result, widest)


def _ranked(operand: Any) -> tuple[DType, int]:
    """An operand's dtype and rank: 2 a tensor with dims, 1 a 0-d tensor, 0 a Python number (at the default width)."""
    if is_kiln_tensor(operand):
        if operand.__dict__.get("wrapped_number"):  # a Python number argument of a kiln.compile'd function, traced
            return _ranked(operand.dtype.numpy.type(0).item())
        return operand.dtype, 2 if operand.ndim else 1
    if isinstance(operand, (bool, np.bool_)):
        return DType.bool, 0
    if isinstance(operand, (int, np.integer)):
        return DType.i64, 0
    if isinstance(operand, (float, np.floating)):
        return get_default_dtype(), 0
    if isinstance(operand, (complex, np.complexfloating)):
        return get_default_dtype().to_complex(), 0
    if isinstance(operand, np.ndarray):
        return DType.of(operand.dtype), 2 if operand.ndim else 1
    raise located_error(f"result_type takes tensors and Python numbers, got {type(operand).__name__}")


def _check_kind(dtype: DType) -> None:
    if dtype not in _KIND:
        raise located_error(f"{dtype} is not a dtype kiln computes in; use bool, uint8, int8, int16, int32, int64, float16, "
                            "bfloat16, float32, float64, complex64 or complex128")


class DTypeKindError(KilnError, TypeError):
    """``finfo``/``iinfo`` asked about what is not a dtype of their kind: a ``TypeError``, as torch's."""


class finfo(NamedTuple):  # noqa: N801  (torch's name)
    """``torch.finfo``: the limits of a float dtype (the default one without an argument)."""

    bits: int
    eps: float
    max: float
    min: float
    tiny: float
    smallest_normal: float
    resolution: float
    dtype: str

    @classmethod
    def of(cls, type: Any = None) -> "finfo":  # noqa: A002
        dtype = get_default_dtype() if type is None else _info_dtype("finfo", type)
        if not dtype.is_float:
            raise DTypeKindError(f"kiln.finfo takes a float dtype (float16, bfloat16, float32 or float64), got {type!r}; use "
                                 "kiln.iinfo for integer dtypes (as torch.finfo, a TypeError)")
        info = ml_dtypes.finfo(dtype.numpy)
        return cls(info.bits, float(info.eps), float(info.max), float(info.min), float(info.tiny),
                   float(info.smallest_normal), 10.0 ** -info.precision, info.dtype.name)

    def __repr__(self) -> str:
        """torch's: ``finfo(resolution=1e-06, min=-3.40282e+38, ..., dtype=float32)``, numbers to 6 digits."""
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
                f"smallest_normal={self.smallest_normal:g}, tiny={self.tiny:g}, dtype={self.dtype})")


class iinfo(NamedTuple):  # noqa: N801  (torch's name)
    """``torch.iinfo``: the limits of an integer dtype."""

    bits: int
    max: int
    min: int
    dtype: str

    @classmethod
    def of(cls, type: Any) -> "iinfo":  # noqa: A002
        dtype = _info_dtype("iinfo", type)
        if not dtype.is_int:  # bool too, as torch
            raise DTypeKindError(f"kiln.iinfo takes an integer dtype (uint8, int8, int16, int32 or int64), got {type!r}; use "
                                 "kiln.finfo for float dtypes; bool has no limits to give (as torch.iinfo, a TypeError)")
        info = np.iinfo(dtype.numpy)
        return cls(info.bits, int(info.max), int(info.min), info.dtype.name)

    def __repr__(self) -> str:
        """torch's: ``iinfo(min=-2.14748e+09, max=2.14748e+09, dtype=int32)``, numbers to 6 digits."""
        return f"iinfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype})"


def _info_dtype(function: str, type: Any) -> DType:  # noqa: A002
    """The dtype ``finfo``/``iinfo`` is asked about; anything that is not a dtype is a ``TypeError``, as torch's."""
    try:
        return DType.of(type)
    except (KilnError, ValueError, TypeError) as error:
        raise DTypeKindError(f"kiln.{function} takes a dtype (kiln.float32, kiln.int64, or Python's float, int), got {type!r}: "
                             f"{error}") from None


FUNCTIONS = {"finfo": finfo.of, "iinfo": iinfo.of}
"""``kiln.finfo(kiln.float32)`` is ``finfo.of(...)`` (a NamedTuple's constructor takes its fields)."""

__all__ = ["can_cast", "get_default_dtype", "is_tensor", "promote_types", "result_type", "set_default_dtype"]
