"""The sparse COO gradient ``nn.Embedding(sparse=True)`` gives its weight, as PyTorch's ``torch.sparse_coo`` tensor.

```python
emb = nn.Embedding(10_000, 64, sparse=True)
emb(words).sum().backward()
emb.weight.grad.is_sparse                # True; layout kiln.sparse_coo
emb.weight.grad._indices()               # (1, nnz): one row per looked-up index, duplicates kept, as torch's
emb.weight.grad.coalesce().values()      # (unique rows, 64): duplicates summed, rows sorted
```

A ``SparseGrad`` holds the looked-up rows ``indices`` (``(1, nnz)``) and their gradients ``values`` (``(nnz, *dense)``)
as NumPy arrays, uncoalesced as PyTorch's backward leaves them (one entry per lookup, in lookup order; a
``padding_idx`` position has none). A second ``backward()`` concatenates, ``zero_grad(set_to_none=False)`` empties it
(nnz 0), a dense gradient added to it makes the sum dense, as PyTorch's ``AccumulateGrad``. ``SparseAdam``,
``SGD`` and ``Adagrad`` take it (``frontend/optim_sparse.py``); the other optimizers refuse it with torch's words.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Layout:
    """``torch.strided`` / ``torch.sparse_coo``: what ``tensor.layout`` answers."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"kiln.{self.name}"


strided = Layout("strided")
sparse_coo = Layout("sparse_coo")


class SparseGrad:
    """A sparse COO tensor of ``shape`` with one sparse dim: rows ``indices[0]`` hold ``values`` (see the module doc)."""

    is_sparse = True
    layout = sparse_coo
    requires_grad = False
    is_leaf = True
    grad_fn = None

    def __init__(self, indices: np.ndarray, values: np.ndarray, shape: tuple[int, ...], coalesced: bool = False):
        self._index_array = np.asarray(indices, dtype=np.int64).reshape(1, -1)
        self._value_array = np.asarray(values)
        self._shape = tuple(int(n) for n in shape)
        self._coalesced = coalesced or self._index_array.shape[1] == 0

    # --- what training code reads --------------------------------------------------------------------------------

    @property
    def shape(self) -> Any:
        from kiln.frontend.torch_size import Size  # lazily: kiln's torch namespace builds on the frontend

        return Size(self._shape)

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self._shape[dim]

    @property
    def dtype(self) -> Any:
        from kiln.compiler.ir.types import DType

        return DType.of(self._value_array.dtype)

    @property
    def device(self) -> Any:
        from kiln.frontend.tensor_device import device

        return device("cpu")

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def dim(self) -> int:
        return len(self._shape)

    def numel(self) -> int:
        return int(np.prod(self._shape))

    def sparse_dim(self) -> int:
        return 1

    def dense_dim(self) -> int:
        return len(self._shape) - 1

    def _nnz(self) -> int:
        return int(self._index_array.shape[1])

    @property
    def data(self) -> "SparseGrad":
        """A new sparse tensor sharing these arrays (PyTorch's ``grad.data``: not the same object, the same storage)."""
        return SparseGrad(self._index_array, self._value_array, self._shape, self._coalesced)

    def detach(self) -> "SparseGrad":
        return self.data

    def is_coalesced(self) -> bool:
        return self._coalesced

    def coalesce(self) -> "SparseGrad":
        """Duplicates summed, rows sorted (``self`` when already coalesced, as PyTorch's)."""
        if self._coalesced:
            return self
        rows, first, inverse = np.unique(self._index_array[0], return_index=True, return_inverse=True)
        summed = np.zeros((len(rows), *self._value_array.shape[1:]), self._value_array.dtype)
        np.add.at(summed, inverse, self._value_array)
        return SparseGrad(rows[None, :], summed, self._shape, coalesced=True)

    def _indices(self) -> Any:
        return _tensor(self._index_array)

    def _values(self) -> Any:
        return _tensor(self._value_array)

    def indices(self) -> Any:
        self._require_coalesced("indices")
        return self._indices()

    def values(self) -> Any:
        self._require_coalesced("values")
        return self._values()

    def _require_coalesced(self, what: str) -> None:
        if not self._coalesced:
            raise RuntimeError(f"Cannot get {what} on an uncoalesced tensor, please call .coalesce() first")

    def to_dense(self) -> Any:
        """The dense tensor (duplicates summed), an eager kiln tensor."""
        return _tensor(self.dense_array())

    def dense_array(self) -> np.ndarray:
        dense = np.zeros(self._shape, self._value_array.dtype)
        np.add.at(dense, self._index_array[0], self._value_array)
        return dense

    def norm(self, p: Any = 2) -> Any:
        """The ``p``-norm of the dense tensor (computed on the coalesced values, as PyTorch's)."""
        values = self.coalesce()._value_array.reshape(-1)
        return _tensor(np.asarray(np.linalg.norm(values, ord=float(p)), values.dtype))

    def numpy(self) -> Any:
        raise TypeError("can't convert Sparse layout tensor to numpy. Use Tensor.to_dense() first.")

    # --- arithmetic training code does on a gradient ---------------------------------------------------------------

    def clone(self) -> "SparseGrad":
        return SparseGrad(self._index_array.copy(), self._value_array.copy(), self._shape, self._coalesced)

    def zero_(self) -> "SparseGrad":
        """Empty (nnz 0), in place: ``zero_grad(set_to_none=False)``, as PyTorch's."""
        self._index_array = np.zeros((1, 0), np.int64)
        self._value_array = np.zeros((0, *self._shape[1:]), self._value_array.dtype)
        self._coalesced = True
        return self

    def mul_(self, factor: Any) -> "SparseGrad":
        self._value_array *= _scalar(factor, "mul_")
        return self

    def div_(self, factor: Any) -> "SparseGrad":
        self._value_array /= _scalar(factor, "div_")
        return self

    def mul(self, factor: Any) -> "SparseGrad":
        return self.clone().mul_(factor)

    __mul__ = __rmul__ = mul

    def __truediv__(self, factor: Any) -> "SparseGrad":
        return self.clone().div_(factor)

    def __neg__(self) -> "SparseGrad":
        return SparseGrad(self._index_array, -self._value_array, self._shape, self._coalesced)

    def add(self, other: Any, alpha: float = 1) -> "SparseGrad":
        if not isinstance(other, SparseGrad):
            raise RuntimeError("add(sparse, dense) is not supported. Use add(dense, sparse) instead.")
        if other._shape != self._shape:
            raise RuntimeError(f"add: expected sizes of the sparse tensors to match, got {self._shape} and {other._shape}")
        return self.concatenated(other._value_array * alpha if alpha != 1 else other._value_array, other._index_array)

    __add__ = add

    def concatenated(self, values: np.ndarray, indices: np.ndarray) -> "SparseGrad":
        """These entries followed by ``indices``/``values`` (PyTorch's sparse + sparse: uncoalesced, concatenated)."""
        dtype = self._value_array.dtype
        return SparseGrad(np.concatenate([self._index_array, indices.reshape(1, -1)], axis=1),
                          np.concatenate([self._value_array, values.astype(dtype, copy=False)]), self._shape)

    def astype(self, dtype: np.dtype) -> "SparseGrad":
        return SparseGrad(self._index_array, self._value_array.astype(dtype, copy=False), self._shape, self._coalesced)

    def __repr__(self) -> str:
        return (f"tensor(indices={self._indices()!r},\n       values={self._values()!r},\n       size={self._shape}, "
                f"nnz={self._nnz()}, dtype={self.dtype}, layout={self.layout})")


def is_sparse_grad(grad: Any) -> bool:
    return isinstance(grad, SparseGrad)


def as_dense(grad: Any) -> Any:
    """``grad``, or a sparse one's dense array (what an optimizer that densifies it, LBFGS's, reads)."""
    return grad.dense_array() if isinstance(grad, SparseGrad) else grad


def accumulated(current: Any, new: Any) -> Any:
    """``current + new`` as PyTorch's ``AccumulateGrad`` adds a new gradient to a ``.grad`` when either is sparse:
    sparse + sparse concatenates, sparse + dense or dense + sparse is dense (a new array)."""
    if isinstance(current, SparseGrad) and isinstance(new, SparseGrad):
        return current.concatenated(new._value_array, new._index_array)
    if isinstance(new, SparseGrad):
        dense = np.array(current, dtype=np.asarray(current).dtype)
        np.add.at(dense, new._index_array[0], new._value_array.astype(dense.dtype, copy=False))
        return dense
    return current.dense_array() + np.asarray(new)


def _scalar(factor: Any, what: str) -> Any:
    if np.ndim(factor) != 0:
        raise RuntimeError(f"sparse {what}: kiln's sparse gradient takes a number (or a 0-d tensor) here, got shape "
                           f"{np.shape(factor)}; use .to_dense() for a dense product")
    return np.asarray(factor).item()


def _tensor(array: np.ndarray) -> Any:
    from kiln.frontend.eager_values import eager_leaf  # lazily: the tensor builds on the frontend

    return eager_leaf(array)


__all__ = ["Layout", "SparseGrad", "accumulated", "as_dense", "is_sparse_grad", "sparse_coo", "strided"]
