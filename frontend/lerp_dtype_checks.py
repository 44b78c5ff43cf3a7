"""torch's refusal of ``lerp`` operands of another dtype (openai/sparse_autoencoder's ``EmaModel`` calls
``torch._foreach_lerp_(self.ema_weights, list(self.model.parameters()), 1 - m)``; float32 EMA weights of float64
parameters raise there): ``end`` must have the input's dtype, and so must a ``weight`` tensor with dims (a 0-d weight
may differ). kiln promoted them silently, so code that fails under torch ran here."""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.mask_dtype_checks import C_TYPE_NAMES


class LerpDtypeError(TraceError, RuntimeError):
    """A ``lerp``/``lerp_`` operand whose dtype is not the input's."""


def check_lerp_operands(tensor: Any, end: Any, weight: Any) -> None:
    """Raise torch's RuntimeError when ``end`` (a tensor) or ``weight`` (a tensor with dims) has another dtype than
    ``tensor``; numbers and 0-d weights pass, as in torch."""
    for name, operand in (("end", end), ("weight", weight)):
        dtype = getattr(operand, "dtype", None)
        if not isinstance(dtype, DType) or dtype is tensor.dtype or (name == "weight" and operand.ndim == 0):
            continue
        raise located(LerpDtypeError, f"expected dtype {C_TYPE_NAMES.get(tensor.dtype, tensor.dtype)} for `{name}` but "
                                      f"got dtype {C_TYPE_NAMES.get(dtype, dtype)}")
