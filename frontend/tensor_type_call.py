"""``Tensor.type``: kiln's ``TensorType`` of the tensor that is also PyTorch's ``Tensor.type(...)`` method.

Inside kiln ``x.type`` is the IR type (``x.type.shape``, ``f"got {x.type}"``); PyTorch code calls it: with no argument
it is the tensor's type string, with a dtype or a type string it casts. Both read the same attribute, so ``x.type`` is
a ``TensorType`` (equal to, and hashing as, the plain one) that remembers its tensor and casts when called.

```python
x = kiln.tensor([1, 2])
x.type()                        # 'torch.LongTensor', PyTorch's string, so ported comparisons hold
x.type(kiln.float64)            # x.double()
x.type("torch.DoubleTensor")    # the same ('kiln.DoubleTensor' and 'torch.cuda.DoubleTensor' too: no devices)
x.type(kiln.HalfTensor)         # x.half(): a legacy constructor names its dtype (kiln.BFloat16Tensor: x.bfloat16())
x.type.shape                    # (2,): still the IR type
```
"""

from __future__ import annotations

from typing import Any

from kiln.compiler.ir.types import DType, TensorType
from kiln.frontend.trace import located_error

TYPE_NAMES = {DType.f16: "HalfTensor", DType.bf16: "BFloat16Tensor", DType.f32: "FloatTensor", DType.f64: "DoubleTensor", DType.i32: "IntTensor",
              DType.i64: "LongTensor", DType.bool: "BoolTensor", DType.u8: "ByteTensor", DType.i8: "CharTensor", DType.i16: "ShortTensor"}
"""PyTorch's legacy tensor type name of each dtype (``torch.DoubleTensor``...)."""
_BY_NAME = {name: dtype for dtype, name in TYPE_NAMES.items()}


class TensorTypeCall(TensorType):
    """A tensor's ``TensorType`` that casts it when called, as PyTorch's ``Tensor.type(dtype=None)``."""

    def __init__(self, type: TensorType, tensor: Any) -> None:  # noqa: A002  (the attribute's name)
        object.__setattr__(self, "shape", type.shape)  # already checked: no second __post_init__ on this hot path
        object.__setattr__(self, "dtype", type.dtype)
        object.__setattr__(self, "_hash", hash(type))
        object.__setattr__(self, "_tensor", tensor)

    def __call__(self, dtype: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
        """No ``dtype``: the type string (``'torch.FloatTensor'``); else the tensor cast to it (itself if it has it)."""
        if kwargs:
            raise TypeError(f"type() got unexpected keyword arguments {sorted(kwargs)}")
        if dtype is None:
            return f"torch.{TYPE_NAMES[self.dtype]}"
        target = dtype_of_type_argument(dtype)
        return self._tensor if target is self.dtype else self._tensor.to(target)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorType) and (self.shape, self.dtype) == (other.shape, other.dtype)

    __hash__ = TensorType.__hash__

    def __repr__(self) -> str:
        return repr(TensorType(self.shape, self.dtype))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled and copied as the plain type: the tensor stays behind."""
        return TensorType, (self.shape, self.dtype)


def dtype_of_type_argument(dst_type: Any) -> DType:
    """The dtype ``type(dst_type)`` casts to: a dtype, a legacy type (``kiln.DoubleTensor``, ``torch.DoubleTensor``:
    it names its dtype) or a type string."""
    if isinstance(dst_type, str):
        return dtype_of_type_name(dst_type)
    return DType.of(getattr(dst_type, "dtype", dst_type))


def dtype_of_type_name(name: str) -> DType:
    """The dtype a type string names: ``'torch.DoubleTensor'``, ``'torch.cuda.LongTensor'``, ``'kiln.FloatTensor'``,
    or a dtype's name (``'float64'``)."""
    prefix, _, last = name.rpartition(".")
    if prefix in ("torch", "torch.cuda", "kiln", "kiln.cuda") and last in _BY_NAME:
        return _BY_NAME[last]
    if not prefix:
        try:
            return DType.of(name)
        except Exception:
            pass
    known = ", ".join(f"'torch.{type_name}'" for type_name in TYPE_NAMES.values())
    raise located_error(f"type({name!r}): not a tensor type kiln knows; use one of {known} or a dtype (kiln.float64)")


__all__ = ["TYPE_NAMES", "TensorTypeCall", "dtype_of_type_argument", "dtype_of_type_name"]
