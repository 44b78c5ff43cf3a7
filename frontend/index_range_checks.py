"""PyTorch's error for a row index outside ``[0, size)`` in ``F.embedding``, ``F.embedding_bag`` and
``index_select``.

These lower to ``tensor.take``, which keeps NumPy's meaning (a negative index counts from the end, as ``torch.take``
and advanced indexing need), so an eager ``nn.Embedding`` given -1 (pandas' code for a missing category) read the last
row silently where torch raises. Eager indices are checked here; a traced index is not (its values exist only at run
time, where NumPy raises for one past the end but still wraps a negative one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend.eager_values import eager_array, trace_stack
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.torch_dtypes import is_tensor


class IndexOutOfRangeError(TraceError, IndexError):
    """A row index outside ``[0, size)``: an ``IndexError`` as torch's ``index out of range in self``, and a
    ``RuntimeError`` as its ``embedding_bag`` one."""


def eager_index_values(index: Any) -> np.ndarray | None:
    """The values of an eager index (a tensor or array-like), else None: a traced one, or one read inside a
    ``kiln.compile`` trace (reading it there would make each new index value trace again)."""
    if trace_stack():
        return None
    values = eager_array(index) if is_tensor(index) else np.asarray(index)
    return None if values is None or values.dtype.kind not in "iu" else values


def first_outside(values: np.ndarray, size: int) -> tuple[int, int] | None:
    """``(position in the flattened index, value)`` of the first value outside ``[0, size)``, else None."""
    outside = np.flatnonzero((values < 0) | (values >= size))
    return None if outside.size == 0 else (int(outside[0]), int(values.reshape(-1)[outside[0]]))


def check_rows_in_range(op: str, index: Any, size: int) -> None:
    """torch's ``IndexError: index out of range in self`` for an eager ``index`` outside ``[0, size)``."""
    values = eager_index_values(index)
    found = None if values is None else first_outside(values, size)
    if found is not None:
        raise located(IndexOutOfRangeError, f"index out of range in self ({op}: index {found[1]} at flat position "
                      f"{found[0]} is outside [0, {size}); a negative index does not count from the end here, as in "
                      "PyTorch: map unknown or missing values to a row of their own)")


def check_bag_indices_in_range(index: Any, size: int) -> None:
    """torch's ``embedding_bag`` error for an eager ``index`` outside ``[0, size)``."""
    values = eager_index_values(index)
    found = None if values is None else first_outside(values, size)
    if found is not None:
        raise located(IndexOutOfRangeError, f"Index {found[0]} of input takes value {found[1]} which is not in the "
                      f"valid range [0, {size}) (embedding_bag: a negative index does not count from the end)")
