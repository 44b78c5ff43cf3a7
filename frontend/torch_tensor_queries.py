"""torch's small functions about a tensor's kind and storage, for code that calls them: ``typename``,
``empty_strided``, ``empty_permuted``, ``is_inference``, ``is_conj``, ``is_neg``, ``resolve_neg``, ``get_device``.

kiln's tensors are dense and materialized: no strides to choose (``empty_strided``/``empty_permuted`` are ``empty``);
``is_conj``, ``is_neg``, ``resolve_neg``, ``is_inference`` and ``get_device`` are the Tensor methods'
(``frontend/tensor_device.py``).
"""

from __future__ import annotations

from typing import Any

_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor", "bfloat16": "BFloat16Tensor",
               "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor", "int8": "CharTensor",
               "uint8": "ByteTensor", "bool": "BoolTensor"}


def typename(obj: Any) -> str:
    """``"torch.FloatTensor"`` for a float32 tensor (torch's legacy type names), else the object's qualified name."""
    from kiln.frontend.tensor import Tensor

    if isinstance(obj, Tensor):
        return f"torch.{_TYPE_NAMES.get(obj.dtype.numpy.name, 'Tensor')}"
    module = type(obj).__module__
    qualified = type(obj).__qualname__
    return qualified if module in ("builtins", "__builtin__", None) else f"{module}.{qualified}"


def empty_strided(size: Any, stride: Any, *, dtype: Any = None, layout: Any = None, device: Any = None,
                  requires_grad: bool = False, pin_memory: bool = False) -> Any:
    """``empty(size)``: kiln lays every tensor out contiguously (``stride`` is accepted, not used)."""
    from kiln.frontend.torch_functions import empty

    return empty(*size, dtype=dtype, requires_grad=requires_grad)


def empty_permuted(size: Any, physical_layout: Any, *, dtype: Any = None, layout: Any = None, device: Any = None,
                   requires_grad: bool = False, pin_memory: bool = False) -> Any:
    """``empty(size)``: the physical layout is a memory-order hint kiln does not use."""
    if sorted(physical_layout) != list(range(len(size))):
        raise RuntimeError(f"Dimension mismatch: physical_layout {list(physical_layout)} is not a permutation of "
                           f"the {len(size)} dims of size {list(size)}")
    return empty_strided(size, (), dtype=dtype, requires_grad=requires_grad)


def is_inference(input: Any) -> bool:
    return input.is_inference()


def is_conj(input: Any) -> bool:
    return input.is_conj()


def is_neg(input: Any) -> bool:
    return input.is_neg()


def resolve_neg(input: Any) -> Any:
    return input.resolve_neg()


def get_device(input: Any) -> int:
    return input.get_device()


__all__ = ["empty_permuted", "empty_strided", "get_device", "is_conj", "is_inference", "is_neg", "resolve_neg",
           "typename"]
