"""``torch.asarray``: a tensor from ``obj`` without a copy where one is not needed, as PyTorch's.

```python
t = kiln.asarray(a)                         # a NumPy array: shared (in-place writes of either are seen in the other)
t = kiln.asarray(a, dtype=kiln.float64)     # another dtype: a copy (copy=False refuses it, as torch's ValueError)
t = kiln.asarray(t0)                        # a tensor: t0 itself (copy=True: a clone)
t = kiln.asarray([1, 2])                    # a sequence or number: a new tensor, as kiln.tensor
```
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType


class AliasError(TraceError, ValueError):
    """``copy=False`` where the result cannot share ``obj``'s memory: a ``ValueError``, as torch's."""


def asarray(obj: Any, *, dtype: Any = None, device: Any = None, copy: bool | None = None,
            requires_grad: bool = False) -> Any:
    """``obj`` as a tensor: shared where it is a tensor or an array of ``dtype`` and ``copy`` is not True."""
    from kiln.frontend.tensor import Tensor  # lazily: the tensor's functions build on it
    from kiln.frontend.torch_functions import from_numpy, tensor

    if isinstance(obj, (Tensor, np.ndarray)):
        target = None if dtype is None else DType.of(dtype)
        current = obj.dtype if isinstance(obj, Tensor) else DType.of(obj.dtype)
        if copy is False and target not in (None, current):
            _refuse(f"can't alias tensor with dtype '{_name(current)}' into dtype '{_name(target)}'.")
        if isinstance(obj, Tensor):
            result = obj.clone() if copy else obj
            result = result if target in (None, current) else result.to(target)
        else:
            result = from_numpy(np.array(obj) if copy else obj) if target in (None, current) else tensor(obj, dtype=target)
    else:
        if copy is False:
            _refuse("can't alias arbitrary sequence into a tensor.")
        result = tensor(obj, dtype=dtype)
    return result.requires_grad_() if requires_grad else result


def _refuse(message: str) -> None:
    from kiln.frontend.inplace_leaf_checks import located  # lazily: the checks build on the tensor

    raise located(AliasError, f"{message} (asarray with copy=False shares obj's memory; pass copy=None to allow a copy)")


def _name(dtype: DType) -> str:
    from kiln.frontend.mask_dtype_checks import SCALAR_TYPE_NAMES

    return "Bool" if dtype is DType.bool else SCALAR_TYPE_NAMES.get(dtype, str(dtype))


__all__ = ["asarray"]
