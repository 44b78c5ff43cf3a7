"""PyTorch's legacy tensor constructors: ``torch.Tensor(data)``, ``torch.LongTensor(n)``, ``torch.FloatTensor(2, 3)``.

```python
word_tensor = kiln.Tensor([[word_idx]]).long()                  # generate.py: a float tensor of the data
dummy_input = kiln.LongTensor(35 * 1).zero_().view(-1, 1)       # main.py's export_onnx: a tensor of that size
kiln.DoubleTensor([[1, 2]]), kiln.BoolTensor(3), kiln.Tensor()  # data cast to the type; sizes; empty
```

Data (a list, an array, a tensor) is copied and cast to the constructor's dtype (``kiln.Tensor``'s is the default
float dtype, as ``torch.Tensor``'s); an array or tensor already of that dtype is shared, as PyTorch's (``torch.Tensor(a)``
of a float32 ``a`` sees ``a``'s writes and writes ``a``). Integers are sizes, and the new tensor holds zeros where
PyTorch leaves memory uninitialized. Outside a trace the result is an eager tensor, traced a constant.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType
from kiln.frontend.torch_dtypes import cast_array
from kiln.frontend.trace import located_error


def legacy_value(args: tuple[Any, ...], dtype: DType) -> Value:
    """The value of ``torch.<Type>Tensor(*args)``: ``args`` is one piece of data, or sizes."""
    from kiln.frontend.tensor import apply  # lazily: Tensor's constructor calls this

    return apply("tensor.constant", value=_legacy_array(args, np.dtype(dtype.numpy))).value


def _legacy_array(args: tuple[Any, ...], dtype: np.dtype) -> np.ndarray:
    if not args:
        return np.zeros((0,), dtype=dtype)  # torch.Tensor(): an empty tensor
    if len(args) == 1 and type(args[0]).__name__ == "Size":
        args = tuple(args[0])
    if all(isinstance(size, (int, np.integer)) and not isinstance(size, bool) for size in args):
        if any(size < 0 for size in args):
            raise located_error(f"a legacy tensor constructor's sizes must be non-negative, got {args!r}")
        return np.zeros(args, dtype=dtype)
    if len(args) == 1:
        own = _storage_of_its_dtype(args[0], dtype)
        return own if own is not None else cast_array(np.array(np.asarray(args[0])), dtype)
    raise located_error(f"a legacy tensor constructor takes one piece of data or sizes (ints), got {args!r}")


def _storage_of_its_dtype(data: Any, dtype: np.dtype) -> np.ndarray | None:
    """The array of ``data`` (a NumPy array or an eager tensor) if it already has ``dtype``: ``torch.Tensor(a)`` of a
    float32 ``a`` shares its memory, as ``from_numpy`` does (``frontend/shared_storage.py``); else None (a copy)."""
    from kiln.frontend.eager_values import eager_array  # lazily: the eager values build on the tensor
    from kiln.frontend.shared_storage import shared

    array = data if type(data) is np.ndarray else eager_array(data) if hasattr(data, "__dict__") else None
    return shared(array) if isinstance(array, np.ndarray) and array.dtype == dtype else None


def legacy_constructor(name: str, dtype: DType) -> Callable[..., Any]:
    def construct(*args: Any) -> Any:
        from kiln.frontend.tensor import Tensor  # lazily: tensor.py imports this file

        if len(args) == 1 and _traced(args[0]):
            return _of_traced(args[0], dtype)
        return Tensor(legacy_value(args, dtype))

    construct.__name__ = construct.__qualname__ = name
    construct.__doc__ = f"``torch.{name}(data)`` (a {np.dtype(dtype.numpy).name} copy) or ``torch.{name}(*sizes)`` (zeros)."
    construct.dtype = dtype  # type: ignore[attr-defined]  (torch.HalfTensor.dtype; x.type(kiln.HalfTensor) reads it)
    return construct


def _traced(data: Any) -> bool:
    """Whether ``data`` is a tensor whose values exist only when the graph runs (in a trace or an export)."""
    from kiln.frontend.eager_values import eager_array  # lazily: the eager values build on the tensor
    from kiln.frontend.tensor import Tensor

    return isinstance(data, Tensor) and eager_array(data) is None


def _of_traced(data: Any, dtype: DType) -> Any:
    """``torch.LongTensor(t)`` of a traced ``t`` (SASRec's ``item_emb(torch.LongTensor(item_indices))`` in an export):
    ``t`` itself as torch's alias when it has the dtype, else ``t`` cast (as kiln's eager constructor casts data)."""
    return data.view(tuple(data.shape)) if data.dtype == dtype else data.to(dtype)


LongTensor = legacy_constructor("LongTensor", DType.i64)
IntTensor = legacy_constructor("IntTensor", DType.i32)
FloatTensor = legacy_constructor("FloatTensor", DType.f32)
DoubleTensor = legacy_constructor("DoubleTensor", DType.f64)
BoolTensor = legacy_constructor("BoolTensor", DType.bool)
HalfTensor = legacy_constructor("HalfTensor", DType.f16)
BFloat16Tensor = legacy_constructor("BFloat16Tensor", DType.bf16)
ByteTensor = legacy_constructor("ByteTensor", DType.u8)
CharTensor = legacy_constructor("CharTensor", DType.i8)
ShortTensor = legacy_constructor("ShortTensor", DType.i16)

__all__ = ["BFloat16Tensor", "BoolTensor", "ByteTensor", "CharTensor", "ShortTensor", "DoubleTensor", "FloatTensor", "HalfTensor", "IntTensor", "LongTensor", "legacy_constructor", "legacy_value"]
