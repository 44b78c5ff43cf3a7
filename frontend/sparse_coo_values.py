"""``torch.sparse_coo_tensor(indices, values, size)`` whose ``values`` carry a gradient or are traced, as a graph
attention layer writes its per-edge weights into a matrix::

    attention = torch.sparse_coo_tensor(edge_index, alpha, (N, N))   # alpha: one weight per edge, requires grad
    out = torch.sparse.mm(attention, h)

kiln stores sparse tensors dense (``frontend/torch_functions.sparse_coo_tensor``). Built by NumPy, the values' link to
the graph was lost: ``alpha`` silently got no gradient, where PyTorch gives each value the gradient at its entry. Here
the dense tensor is ``zeros(size).index_put(indices, values, accumulate=True)``: repeated indices sum (torch's
``coalesce``), and each value's gradient is the dense gradient at its entry, eagerly and in a trace.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.eager_values import eager_array
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error


def coo_with_tensor_values(indices: Any, values: Tensor, size: Any, dtype: Any) -> Tensor:
    """The dense form of the COO tensor, differentiable in ``values`` (a traced or eager Tensor)."""
    from kiln.frontend.torch_functions import tensor, zeros  # lazily: torch_functions calls this

    known = _known_indices(indices)
    index = indices if isinstance(indices, Tensor) else tensor(known)
    if index.ndim != 2 or index.dtype not in (DType.i64, DType.i32) or index.shape[1] != values.shape[0]:
        raise located_error(f"sparse_coo_tensor: indices must be integers of shape (sparse dims, nnz) matching values' "
                            f"first dim {values.shape[0]}, got {index.dtype} {tuple(index.shape)}")
    shape = _shape(known, values, size, index.shape[0])
    values = values if dtype is None else values.to(dtype)
    rows = tuple(index[dim] for dim in range(index.shape[0]))
    return zeros(shape, dtype=values.dtype).index_put(rows, values, accumulate=True)


def _known_indices(indices: Any) -> np.ndarray | None:
    """The index values when they exist now (an array, a list, an eager tensor); None for a traced tensor."""
    if isinstance(indices, Tensor):
        return eager_array(indices)
    return np.asarray(indices)


def _shape(known: np.ndarray | None, values: Tensor, size: Any, sparse_dims: int) -> tuple[int, ...]:
    """``size``, checked against the indices when they are known; without it, the largest index + 1 per sparse dim."""
    if size is None:
        if known is None:
            raise located_error("sparse_coo_tensor: traced indices need the size: pass it, "
                                "torch.sparse_coo_tensor(indices, values, (N, N))")
        return (*(int(d) + 1 for d in known.max(axis=1)), *values.shape[1:])
    shape = tuple(int(d) for d in size)
    if known is not None and known.size:
        bounds = np.asarray(shape[:sparse_dims]).reshape(-1, 1)
        if (known < 0).any() or (known >= bounds).any():
            raise located_error(f"sparse_coo_tensor: an index is outside the size {shape}: each row of indices must lie "
                                f"in [0, size[d]); got rows ranging {known.min(axis=1).tolist()}..{known.max(axis=1).tolist()}")
    return shape


__all__ = ["coo_with_tensor_values"]
