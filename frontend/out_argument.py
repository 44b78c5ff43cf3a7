"""PyTorch's ``out=`` for kiln's factory functions: ``torch.arange(0, max_len, out=torch.LongTensor(max_len))``, as
NVIDIA Tacotron 2's ``get_mask_from_lengths`` writes it (with ``torch.cuda.LongTensor`` there).

The result is computed in ``out``'s dtype (a ``dtype=`` that differs is PyTorch's RuntimeError), ``out`` is resized
to the result's shape (with PyTorch's warning when it held a different number of elements) and its values become the
result's; ``out`` itself is returned.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType
from kiln.frontend.trace import located_error


class OutDtypeError(TraceError, RuntimeError):
    """A ``dtype=`` that is not ``out``'s: PyTorch's RuntimeError."""


def out_dtype(out: Any, dtype: Any) -> Any:
    """The dtype a factory given ``out=`` computes in: ``out``'s; ``dtype`` must be it if given."""
    if dtype is not None and DType.of(dtype) is not out.dtype:
        raise located_error(f"dtype {DType.of(dtype)} does not match dtype of out parameter ({out.dtype}); drop "
                            "dtype= or pass an out tensor of that dtype", kind=OutDtypeError)
    return out.dtype


def written_to_out(out: Any, result: Any) -> Any:
    """``out`` resized to ``result``'s shape and holding its values (PyTorch's ``out=``)."""
    shape = tuple(result.shape)
    if tuple(out.shape) != shape:
        if out.numel() and out.numel() != int(np.prod(shape)):
            warnings.warn(f"The number of elements in the out tensor of shape {list(out.shape)} is {out.numel()} "
                          f"which does not match the computed number of elements {int(np.prod(shape))}. The out tensor "
                          f"will be resized to a tensor of shape {shape}.", UserWarning, stacklevel=3)
        out.resize_(*shape)
    return out.copy_(result)
