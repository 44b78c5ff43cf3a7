"""PyTorch's legacy sparse constructors, ``torch.sparse.FloatTensor(indices, values, size)`` and its kin (LightGCN's
``_convert_sp_mat_to_sp_tensor``, pygcn's ``sparse_mx_to_torch_sparse_tensor``), and the COO interface of a sparse
tensor: ``coalesce()`` (LightGCN's ``self.Graph = self.Graph.coalesce()``), ``indices()``/``_indices()``,
``values()``/``_values()`` and ``_nnz()`` (NGCF's ``sparse_dropout``).

torch 2.13 builds ``torch.sparse.<T>Tensor(indices, values[, size])`` as ``sparse_coo_tensor(indices, values[,
size])``, warning once that the form is deprecated, in the values' dtype whatever ``<T>`` says
(``torch.sparse.DoubleTensor(i, float32_values)`` is float32); given sizes only, it is an empty tensor of ``<T>``'s
dtype. kiln stores sparse tensors dense (``frontend/torch_functions.sparse_coo_tensor``), their repeated indices summed
already, so a sparse tensor is always coalesced: ``coalesce()`` is the tensor itself, and its entries are its nonzero
ones in row-major order (a coalesced tensor's order; an entry stored as an explicit zero is not told from an absent
one). A tensor that was never sparse gets torch's errors.

```python
graph = torch.sparse.FloatTensor(index, data, torch.Size(coo.shape)).coalesce()
torch.sparse.mm(graph, all_emb)                    # a dense product in kiln, torch's values and gradients
i, v = graph._indices(), graph._values()           # (2, nnz) int64 and (nnz,), the gradient reaching the dense form
```
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType
from kiln.frontend.trace import located_error
from kiln.frontend.warn_once import warn_once

DEPRECATED_WITH_SHAPE = ("torch.sparse.SparseTensor(indices, values, shape, *, device=) is deprecated.  Please use "
                         "torch.sparse_coo_tensor(indices, values, shape, dtype=, device=).")
DEPRECATED = ("torch.sparse.SparseTensor(indices, values, *, device=) is deprecated.  Please use "
              "torch.sparse_coo_tensor(indices, values, dtype=, device=).")
DEPRECATED_SIZES = ("torch.sparse.SparseTensor(shape, *, device=) is deprecated.  Please use "
                    "torch.sparse_coo_tensor(shape, dtype=, device=).")
"""torch 2.13's warnings (once a process each) for the legacy constructors given indices and values, or sizes."""

class SparseArgumentsError(TraceError, TypeError):
    """Arguments no legacy sparse constructor takes: a ``TypeError``, as torch's."""


_SPARSE = "_sparse_coo"
"""The mark in a tensor's ``__dict__`` of one built as a sparse tensor (kiln holds it dense)."""


def marked_sparse(tensor: Any) -> Any:
    """``tensor``, marked as one a sparse constructor built (``coalesce()`` then answers as torch's sparse tensor's)."""
    tensor.__dict__[_SPARSE] = True
    return tensor


def sparse_marked(value: Any) -> bool:
    """Whether ``value`` is a tensor a sparse constructor or ``to_sparse()`` built."""
    return bool(getattr(value, "__dict__", {}).get(_SPARSE))


def coalesced(tensor: Any) -> Any:
    """``tensor.coalesce()``: the tensor itself for a sparse one (its repeated entries are summed in its dense form);
    torch's RuntimeError for one that was never sparse."""
    if not tensor.__dict__.get(_SPARSE):
        raise located_error("coalesce expected sparse coordinate tensor layout but got Strided")  # a RuntimeError
    return tensor


class DenseLayoutError(TraceError, NotImplementedError):
    """A sparse-only method of a dense tensor: torch's ``NotImplementedError`` (no CPU kernel), located."""


def coo_indices(tensor: Any, method: str) -> Any:
    """``indices()`` / ``_indices()``: the ``(sparse dims, nnz)`` int64 positions of the entries, row-major."""
    _check_sparse(tensor, method)
    return tensor.nonzero().t()


def coo_values(tensor: Any, method: str) -> Any:
    """``values()``: the entries at ``coo_indices``, gathered (the gradient reaches the tensor, as torch's);
    ``_values()``: the same without a gradient (torch's raw accessor)."""
    _check_sparse(tensor, method)
    values = tensor[tuple(tensor.nonzero().t())]
    return values if method == "values" else values.detach()


def coo_nnz(tensor: Any) -> int:
    """``_nnz()``: how many entries the tensor holds."""
    _check_sparse(tensor, "_nnz")
    return int(tensor.count_nonzero().item())


def _check_sparse(tensor: Any, method: str) -> None:
    if tensor.__dict__.get(_SPARSE):
        return
    if method in ("indices", "values"):  # torch's RuntimeErrors
        layout = "sparse coordinate tensor" if method == "indices" else "sparse tensor"
        raise located_error(f"{method} expected {layout} layout but got Strided")
    raise located_error(f"Could not run 'aten::{method}' with arguments from the 'CPU' backend: a dense tensor has no "
                        f"{method}() (kiln holds sparse tensors dense; build one with torch.sparse_coo_tensor)",
                        kind=DenseLayoutError)


def sparse_legacy_constructor(name: str, dtype: DType) -> Callable[..., Any]:
    def construct(*args: Any, device: Any = None) -> Any:
        from kiln.frontend.torch_functions import sparse_coo_tensor, zeros  # lazily: the torch namespace builds on this

        if args and all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in args):
            warn_once(DEPRECATED_SIZES)
            return marked_sparse(zeros(*args, dtype=dtype))
        if len(args) not in (2, 3):
            raise located_error(f"torch.sparse.{name} takes (indices, values), (indices, values, size) or sizes, got "
                                f"{len(args)} arguments; write torch.sparse_coo_tensor(indices, values, size)", kind=SparseArgumentsError)
        warn_once(DEPRECATED_WITH_SHAPE if len(args) == 3 else DEPRECATED)
        return sparse_coo_tensor(*args)

    construct.__name__ = construct.__qualname__ = name
    construct.__doc__ = (f"``torch.sparse.{name}(indices, values[, size])``: ``sparse_coo_tensor`` in the values' dtype, "
                         f"as torch 2.13's (warned once: deprecated); ``torch.sparse.{name}(*sizes)``: empty, "
                         f"{np.dtype(dtype.numpy).name}.")
    return construct


FloatTensor = sparse_legacy_constructor("FloatTensor", DType.f32)
DoubleTensor = sparse_legacy_constructor("DoubleTensor", DType.f64)
HalfTensor = sparse_legacy_constructor("HalfTensor", DType.f16)
LongTensor = sparse_legacy_constructor("LongTensor", DType.i64)
IntTensor = sparse_legacy_constructor("IntTensor", DType.i32)

__all__ = ["DenseLayoutError", "DoubleTensor", "FloatTensor", "HalfTensor", "IntTensor", "LongTensor", "coalesced", "coo_indices",
           "coo_nnz", "coo_values", "marked_sparse"]
