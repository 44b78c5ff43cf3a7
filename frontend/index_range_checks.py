"""PyTorch's error for a row index outside ``[0, size)`` in ``F.embedding``, ``F.embedding_bag`` and
``index_select``.

These lower to ``tensor.take``, which keeps NumPy's meaning (a negative index counts from the end, as ``torch.take``
and advanced indexing need), so an eager ``nn.Embedding`` given -1 (pandas' code for a missing category) read the last
row silently where torch raises. Eager indices are checked here. A traced index (in ``kiln.compile``, a training step)
has its values only at run time: ``checked_at_run_time`` puts a ``tensor.check_index`` before its use, whose kernel
raises the same words when the graph runs (``gather``, ``scatter`` and ``one_hot`` use it too).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend.eager_values import eager_array, trace_stack
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.torch_dtypes import is_kiln_tensor


class IndexOutOfRangeError(TraceError, IndexError):
    """A row index outside ``[0, size)``: an ``IndexError`` as torch's ``index out of range in self``, and a
    ``RuntimeError`` as its ``embedding_bag`` one."""


def eager_index_values(index: Any) -> np.ndarray | None:
    """The values of an eager index (a tensor or array-like), else None: a traced one, or one read inside a
    ``kiln.compile`` trace (reading it there would make each new index value trace again)."""
    if trace_stack():
        return None
    values = eager_array(index) if is_kiln_tensor(index) else np.asarray(index)
    return None if values is None or values.dtype.kind not in "iu" else values


def first_outside(values: np.ndarray, size: int) -> tuple[int, int] | None:
    """``(position in the flattened index, value)`` of the first value outside ``[0, size)``, else None."""
    outside = np.flatnonzero((values < 0) | (values >= size))
    return None if outside.size == 0 else (int(outside[0]), int(values.reshape(-1)[outside[0]]))


def check_rows_in_range(op: str, index: Any, size: int) -> Any:
    """torch's ``IndexError: index out of range in self`` for an eager ``index`` outside ``[0, size)``; returns the
    index to use (a traced one checked at run time)."""
    message = (f"index out of range in self ({op}: index {{value}} at flat position {{position}} is outside [0, {size}); "
               "a negative index does not count from the end here, as in PyTorch: map unknown or missing values to a "
               "row of their own)")
    return checked_index(index, size, message, IndexOutOfRangeError)


def check_bag_indices_in_range(index: Any, size: int) -> Any:
    """torch's ``embedding_bag`` error for an eager ``index`` outside ``[0, size)``; returns the index to use (a
    traced one checked at run time)."""
    message = (f"Index {{position}} of input takes value {{value}} which is not in the valid range [0, {size}) "
               "(embedding_bag: a negative index does not count from the end)")
    return checked_index(index, size, message, IndexOutOfRangeError)


def checked_index(index: Any, size: int, message: str, error: type[TraceError]) -> Any:
    """``index`` after raising ``error`` with ``message`` (its ``{value}`` and ``{position}`` filled in) for an eager
    value outside ``[0, size)``; a traced one checked at run time (``checked_at_run_time``)."""
    values = eager_index_values(index)
    found = None if values is None else first_outside(values, size)
    if found is not None:
        raise located(error, message.format(value=found[1], position=found[0]))
    return checked_at_run_time(index, size, message)


def checked_at_run_time(index: Any, size: Any, message: str) -> Any:
    """``index`` behind a ``tensor.check_index`` where it is traced (its values exist only when the graph runs), so
    the graph raises ``message`` for a value outside ``[0, size)``, as PyTorch's kernels check; else ``index``."""
    if not trace_stack() or not is_kiln_tensor(index) or not isinstance(size, int) or size <= 0 or not index.dtype.is_int:
        return index
    from kiln.frontend.tensor import apply  # lazily: the tensor builds on these checks

    return apply("tensor.check_index", index, size=size, message=message)
