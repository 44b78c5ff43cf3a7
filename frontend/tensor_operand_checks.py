"""PyTorch's ``TypeError`` for a non-tensor operand of an op that has no Scalar overload.

``torch.maximum``, ``minimum``, ``fmax`` and ``fmin`` (and their methods) take two tensors only:

```python
torch.maximum(t, 2.0)    # TypeError: maximum(): argument 'other' (position 2) must be Tensor, not float
t.fmin(0)                # TypeError: fmin(): argument 'other' (position 1) must be Tensor, not int
```

kiln's ops broadcast numbers, so it accepted them, and code written against kiln then failed under PyTorch. NumPy's
ufuncs of a tensor (``np.maximum(p.data, 0.0)``) and ``torch._foreach_maximum(tensors, 0.0)`` do take numbers.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from kiln.compiler.errors import TraceError

TENSOR_ONLY = frozenset({"maximum", "minimum", "fmax", "fmin"})
"""The functions and methods that refuse a number or an array operand, as PyTorch's."""

_NUMBER_FORMS = {"maximum": "x.clamp(min=number)", "minimum": "x.clamp(max=number)",
                 "fmax": "x.fmax(kiln.full_like(x, number))", "fmin": "x.fmin(kiln.full_like(x, number))"}


class TensorOperandError(TraceError, TypeError):
    """A number, array or other non-tensor where PyTorch's op takes only a tensor: a ``TypeError``, as PyTorch's."""


def check_tensor_operands(function: str, operands: Iterable[tuple[str, Any, int | None]]) -> None:
    """Refuse, with PyTorch's message, the first of ``operands`` (name, value, position; None when passed by keyword)
    that is no tensor."""
    for name, value, position in operands:
        if not _is_tensor(value):
            from kiln.frontend.inplace_leaf_checks import located  # lazily: the checks build on the tensor

            where = f" (position {position})" if position is not None else ""
            raise located(TensorOperandError, f"{function}(): argument '{name}'{where} must be Tensor, not "
                          f"{_type_name(value)}; pass a tensor, or for a number write {_NUMBER_FORMS[function]}")


def _is_tensor(value: Any) -> bool:
    """A kiln tensor, or a parameter's ``.data`` (a ``TorchArray``, PyTorch's tensor)."""
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on its checks
    from kiln.frontend.torch_array import TorchArray

    return isinstance(value, (Tensor, TorchArray))


def _type_name(value: Any) -> str:
    """PyTorch's name for the type: a builtin's own (``float``), else qualified by its module (``numpy.ndarray``)."""
    kind = type(value)
    module = "numpy" if kind.__module__.startswith("numpy") or isinstance(value, (np.ndarray, np.generic)) else kind.__module__
    return kind.__name__ if module == "builtins" else f"{module}.{kind.__name__}"


__all__ = ["TENSOR_ONLY", "TensorOperandError", "check_tensor_operands"]
