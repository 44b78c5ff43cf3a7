"""torch 2.x's refusal of a mask that is not bool in ``masked_fill``/``masked_fill_`` and ``masked_scatter``
(Transformer-XL's original ``dec_attn_mask = torch.triu(...).byte()``): the same RuntimeError with torch's words, which
name the mask's C type, instead of kiln's ``tensor.where needs a bool condition``."""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType
from kiln.frontend.inplace_leaf_checks import located

C_TYPE_NAMES = {DType.u8: "unsigned char", DType.i8: "signed char", DType.i16: "short int", DType.i32: "int",
                DType.i64: "long int", DType.f16: "c10::Half", DType.bf16: "c10::BFloat16", DType.f32: "float",
                DType.f64: "double"}
"""How ``masked_fill_``'s message names a dtype (C++'s type names)."""

SCALAR_TYPE_NAMES = {DType.u8: "Byte", DType.i8: "Char", DType.i16: "Short", DType.i32: "Int", DType.i64: "Long",
                     DType.f16: "Half", DType.bf16: "BFloat16", DType.f32: "Float", DType.f64: "Double"}
"""How ``masked_scatter_``'s message names a dtype (ATen's ScalarType names)."""


class MaskDtypeError(TraceError, RuntimeError):
    """A mask that is not bool given to ``masked_fill`` or ``masked_scatter``."""


def check_bool_mask(mask: Any, method: str) -> None:
    """Raise torch's error unless ``mask`` (a kiln Tensor) is bool; ``method`` is ``masked_fill_`` or ``masked_scatter_``."""
    dtype = getattr(mask, "dtype", DType.bool)
    if not isinstance(dtype, DType) or dtype is DType.bool:  # a bool mask, or not a kiln tensor (checked where used)
        return
    names = SCALAR_TYPE_NAMES if method == "masked_scatter_" else C_TYPE_NAMES
    raise located(MaskDtypeError, f"{method} only supports boolean masks, but got mask with dtype "
                                  f"{names.get(dtype, dtype)}; convert the mask with .bool()")
