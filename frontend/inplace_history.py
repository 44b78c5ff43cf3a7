"""An eager in-place write of a tensor that needs no gradient keeps no history, as PyTorch's keeps none.

An eager in-place write rebinds the tensor to the write's result (``tensor_inplace.rebind``), whose op reads the old
value; so each write chained the tensor to all its earlier values, with their arrays. A replay buffer written row by
row (``buffer[i] = obs``) or a running sum (``total.add_(x)``) then held every version it ever had: memory grew with
each step. No backward reads that chain when the result requires no gradient, so the tensor takes a leaf holding the
result's array instead; graphs that read an old value keep it, as PyTorch's saved tensors do.

```python
total = kiln.zeros(256, 256)
for x in batches:
    total.add_(x)          # total's value: a leaf each time, not add(add(add(...)))
```
"""

from __future__ import annotations

from typing import Any

from kiln.compiler.ir.core import Value
from kiln.frontend.eager_values import ARRAYS, array_type


def without_history(result: Any) -> Any:
    """``result`` (an eager write's result), or where it requires no gradient a leaf holding its array."""
    from kiln.frontend.op_dispatch import tensor_of  # lazily: the tensor builds on the in-place writes
    from kiln.frontend.tensor_eager import _depends_on_a_leaf

    value = result.__dict__.get("_value")
    array = ARRAYS.get(value) if value is not None else None
    if array is None or value.producer is None or _depends_on_a_leaf(value):
        return result
    leaf = Value(array_type(array), None, 0, None)
    ARRAYS[leaf] = array
    return tensor_of(leaf)


__all__ = ["without_history"]
