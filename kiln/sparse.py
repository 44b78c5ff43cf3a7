"""``kiln.sparse``: ``torch.sparse``'s products and sums over kiln's one, dense, layout.

``kiln.sparse_coo_tensor`` builds its tensor dense (``frontend/torch_functions.py``), so a graph convolution's
``torch.sparse.mm(adjacency, x)`` is a dense matrix product with torch's values and gradients. ``torch.sparse``'s
softmax treats entries never given as minus infinity; a dense tensor cannot tell them from stored zeros, so it is
refused with what to use instead. The legacy constructors (``torch.sparse.FloatTensor(indices, values, size)``) are
``frontend/sparse_legacy.py``'s.
"""

from __future__ import annotations

from typing import Any

from kiln.frontend.sparse_legacy import DoubleTensor, FloatTensor, HalfTensor, IntTensor, LongTensor  # noqa: F401
from kiln.frontend.torch_functions import spmm
from kiln.frontend.trace import located_error


def mm(sparse: Any, dense: Any) -> Any:
    """``torch.sparse.mm``: ``sparse @ dense`` for 2-D tensors."""
    return spmm(sparse, dense)


def addmm(input: Any, mat1: Any, mat2: Any, *, beta: float = 1.0, alpha: float = 1.0) -> Any:  # noqa: A002
    """``torch.sparse.addmm``: ``beta * input + alpha * (mat1 @ mat2)``."""
    return beta * input + alpha * spmm(mat1, mat2)


def sum(input: Any, dim: Any = None, dtype: Any = None) -> Any:  # noqa: A001, A002  (torch's name)
    """``torch.sparse.sum``: the sum of every entry, or over ``dim`` (an int or a tuple)."""
    if dim is None:
        return input.sum(dtype=dtype)
    return input.sum(dim=dim, dtype=dtype)


def _no_masked(name: str) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise located_error(f"kiln.sparse.{name}: torch's sparse {name} treats entries never given as -inf, and kiln stores "
                            f"sparse tensors dense, so it cannot tell them from zeros; use F.{name} on a dense tensor with the "
                            "missing entries filled with float('-inf') (masked_fill), which is what torch computes")
    refuse.__name__ = name
    return refuse


softmax = _no_masked("softmax")
log_softmax = _no_masked("log_softmax")

__all__ = ["DoubleTensor", "FloatTensor", "HalfTensor", "IntTensor", "LongTensor", "addmm", "log_softmax", "mm", "softmax", "sum"]
