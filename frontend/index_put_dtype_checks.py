"""torch's refusal of an ``index_put`` source whose dtype differs from the destination's.

``t.index_put_(indices, values)``, ``t.index_put(...)`` and an index assignment with an advanced index
(``t[idx] = src``, ``t[rows, cols] = src``, ``t[mask] = src`` with several values) write through ATen's
``index_put_``, which casts nothing:

```python
t = torch.zeros(4)
t[torch.tensor([0, 2])] = src.double()    # RuntimeError: Index put requires the source and destination dtypes match,
                                          # got Float for the destination and Double for the source.
t[1:3] = src.double()                     # a basic index: copy_ casts
t[mask] = torch.tensor(1.5).double()      # one bool mask and one value: masked_fill_ casts
```

kiln cast the source everywhere, so a program written against kiln failed under torch.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType
from kiln.frontend.mask_dtype_checks import SCALAR_TYPE_NAMES
from kiln.frontend.inplace_leaf_checks import located


class IndexPutDtypeError(TraceError, RuntimeError):
    """A source of another dtype than the destination written through ``index_put_``: a ``RuntimeError``, as torch's."""


def check_index_put_source(destination: Any, indices: Sequence[Any], source: Any, accumulate: bool = False) -> None:
    """Refuse, as torch's ``index_put_``, a tensor ``source`` of another dtype than ``destination``'s, unless the
    write is torch's ``masked_fill_`` (one bool mask, one value, no ``accumulate``)."""
    dtype = getattr(source, "dtype", None)
    if not isinstance(dtype, DType) or dtype is destination.dtype:
        return
    if not accumulate and len(indices) == 1 and _is_bool_tensor(indices[0]) and _single_value(source):
        return
    raise located(IndexPutDtypeError, "Index put requires the source and destination dtypes match, got "
                  f"{_name(destination.dtype)} for the destination and {_name(dtype)} for the source. (Cast the "
                  f"source first: src.to({_kiln_name(destination.dtype)}))")


def check_index_assignment_source(destination: Any, index: Any, source: Any) -> None:
    """``destination[index] = source``: refused as ``index_put_`` where ``index`` has an advanced part (index tensors,
    lists, arrays or bool masks); a basic index (ints, slices, ``None``, ``...``, a 0-d integer tensor) casts."""
    items = index if isinstance(index, tuple) else (index,)
    advanced = [item for item in items if _is_advanced(item)]
    if advanced:
        check_index_put_source(destination, advanced, source)


def _is_advanced(item: Any) -> bool:
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on its checks

    if isinstance(item, Tensor):
        return item.ndim > 0 or item.dtype is DType.bool
    return isinstance(item, (list, np.ndarray))  # index lists and arrays, as torch reads them


def _is_bool_tensor(item: Any) -> bool:
    return getattr(item, "dtype", None) is DType.bool


def _single_value(source: Any) -> bool:
    return all(dim == 1 for dim in source.shape)


def _name(dtype: DType) -> str:
    return "Bool" if dtype is DType.bool else SCALAR_TYPE_NAMES.get(dtype, str(dtype))


def _kiln_name(dtype: DType) -> str:
    return f"kiln.{np.dtype(dtype.numpy).name}" if dtype is not DType.bf16 else "kiln.bfloat16"


__all__ = ["IndexPutDtypeError", "check_index_assignment_source", "check_index_put_source"]
