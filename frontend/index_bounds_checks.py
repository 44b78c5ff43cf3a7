"""PyTorch's errors for an index out of bounds, with its words, naming the user's line:

```python
x[5]                      # x (3, 4): IndexError: index 5 is out of bounds for dimension 0 with size 3
x[:, 4] = 0               # IndexError: index 4 is out of bounds for dimension 1 with size 4
x.gather(1, index)        # RuntimeError: index 4 is out of bounds for dimension 1 with size 4
x.scatter(0, index, 1.0)  # RuntimeError: index 5 is out of bounds for dimension 0 with size 3
boxes[:, 2]               # boxes (0,): IndexError: too many indices for tensor of dimension 1
```

``gather`` and the ``scatter`` family lower to NumPy's ``take``/``put``, which wrap a negative index (or fail naming
the flattened array); their eager index is checked here, as PyTorch's kernels check it, and a traced one when the
graph runs (``tensor.check_index``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend.index_range_checks import checked_index
from kiln.frontend.inplace_leaf_checks import located


class IndexOutOfBoundsError(TraceError, IndexError):
    """An int index outside ``[-size, size)`` of its dim (torch's ``IndexError``)."""


class IndexValueOutOfBoundsError(TraceError, RuntimeError):
    """A value of ``gather``'s or ``scatter``'s index tensor outside ``[0, size)`` (torch's ``RuntimeError``)."""


def out_of_bounds(item: int, dim: int, size: int) -> IndexOutOfBoundsError:
    """The error for ``x[item]`` on dim ``dim`` of ``size``, to raise (an ``IndexError`` ends a for loop's
    iteration over a tensor by indexing, as for sequences)."""
    return located(IndexOutOfBoundsError, f"index {item} is out of bounds for dimension {dim} with size {size}")


def too_many_indices(x: Any, items: list[Any]) -> IndexOutOfBoundsError:
    """torch's ``IndexError`` for more index items than ``x`` has dims, to raise: an int into a 0-d tensor gets its
    advice to use ``item()``. SAM's ``box_area(data["crop_boxes"])`` meets it when a crop kept no mask
    (``torch.tensor([])`` is 1-d); ported code catches ``IndexError``."""
    if x.ndim == 0 and items and isinstance(items[0], (int, np.integer)) and not isinstance(items[0], bool):
        return located(IndexOutOfBoundsError, "invalid index of a 0-dim tensor. Use `tensor.item()` in Python or "
                                              "`tensor.item<T>()` in C++ to convert a 0-dim tensor to a number")
    return located(IndexOutOfBoundsError, f"too many indices for tensor of dimension {x.ndim}")


def check_index_values(index: Any, dim: int, size: Any) -> Any:
    """torch's error for an eager ``index`` (of ``gather``, ``scatter``...) with a value outside ``[0, size)``;
    returns the index to use (a traced one checked when the graph runs: ``checked_at_run_time``)."""
    if not isinstance(size, int):
        return index
    message = f"index {{value}} is out of bounds for dimension {dim} with size {size}"
    return checked_index(index, size, message, IndexValueOutOfBoundsError)
