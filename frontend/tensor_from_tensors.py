"""``torch.tensor`` of a tensor, or of nested lists holding tensors, built as PyTorch builds it, in a trace too.

PyTorch copies a tensor given to ``torch.tensor`` (detached, with a warning recommending ``detach().clone()``), and
reads each tensor in a list as a scalar: a one-element tensor, of any dtype, the result's dtype promoting the
elements' (a Python float counting as the default float, an int as int64, a bool as bool). ``torch.compile`` traces
both: a metric row ``torch.tensor([loss_a, loss_b])``, a draw fed into ``torch.tensor(noise)``. NumPy's parse of the
data cannot read a traced tensor (its values do not exist yet), and reads an eager one's dtype its own way, so such
data is built here from tensor ops instead:

```python
torch.tensor(x)                          # x.detach().clone()
torch.tensor(x, dtype=torch.float32)     # x.detach().clone().to(torch.float32)
torch.tensor([a.sum(), b.max(), 1.0])    # torch.stack of the three as 0-d tensors, float64 if a is float64
torch.tensor([x, x])                     # x of two elements: ValueError, as torch's
torch.tensor([x[0]], dtype=torch.long)   # x floating: TypeError, as torch's (a Python float is cast)
```
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType

_SEQUENCES = (list, tuple)


def holds_tensors(data: Any) -> bool:
    """Whether ``data`` is a tensor or a (nested) list or tuple with a tensor in it."""
    from kiln.frontend.tensor import Tensor

    if isinstance(data, Tensor):
        return True
    return isinstance(data, _SEQUENCES) and any(holds_tensors(item) for item in data)


def tensor_of_tensors(data: Any, dtype: Any = None) -> Any:
    """``torch.tensor(data, dtype=dtype)`` for ``data`` that ``holds_tensors``: a copy without gradient history."""
    from kiln.frontend.tensor import Tensor

    if isinstance(data, Tensor):
        copy = data.detach().clone()
        return copy if dtype is None else copy.to(dtype)
    return _stacked(data, DType.of(dtype) if dtype is not None else _inferred_dtype(data))


def _stacked(data: Any, dtype: DType) -> Any:
    """The nested sequence as one tensor of ``dtype``, each leaf a scalar."""
    from kiln.frontend.functional_movement import stack
    from kiln.frontend.tensor import Tensor
    from kiln.frontend.torch_functions import tensor

    if isinstance(data, _SEQUENCES):
        return stack([_stacked(item, dtype) for item in data])
    if isinstance(data, Tensor):
        if data.numel() != 1:
            raise ValueError("only one element tensors can be converted to Python scalars")
        if data.dtype.is_float and not dtype.is_float:  # torch reads it by __index__ for an integer or bool dtype
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return data.detach().reshape(()).to(dtype)
    return tensor(data, dtype=dtype)


def _inferred_dtype(data: Any) -> DType:
    """torch's dtype for the data: the elements' dtypes promoted (Python floats the default float, ints int64)."""
    from kiln.frontend.tensor import Tensor
    from kiln.frontend.torch_dtypes import get_default_dtype, promote_types

    if isinstance(data, _SEQUENCES):
        dtypes = [_inferred_dtype(item) for item in data]
        result = dtypes[0] if dtypes else get_default_dtype()
        for other in dtypes[1:]:
            result = promote_types(result, other)
        return result
    if isinstance(data, Tensor):
        return data.dtype
    if isinstance(data, np.generic):
        return DType.of(data.dtype)
    if isinstance(data, bool):
        return DType.bool
    return DType.i64 if isinstance(data, int) else get_default_dtype()
