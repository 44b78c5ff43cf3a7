"""``F.embedding``'s ``max_norm`` and ``scale_grad_by_freq``, as PyTorch's.

```python
emb = nn.Embedding(10_000, 64, max_norm=1.0)   # rows looked up are renormalized in place first (eager)
emb = nn.Embedding(10_000, 64, scale_grad_by_freq=True)   # a row's gradient is divided by its count in the batch
```

``max_norm`` is PyTorch's ``embedding_renorm_``: before the lookup, each row
the indices name whose ``norm_type``-norm exceeds ``max_norm`` is scaled in
place by ``max_norm / (norm + 1e-7)``, outside autograd, so the gradient is the
plain lookup's. Eagerly it scales the weight's array; in a trace
(``kiln.compile``, TransE's whole training step) it writes the looked-up rows
back as an in-place ``index_copy_`` under ``no_grad``, as a traced
``weight.data`` write does, so the lookup, the gradient's owner and the
optimizer's update all see the renormalized rows, as PyTorch's:

```
%rows  = take(%weight, %flat)                  rows looked up
%scale = where(norm(%rows) > max_norm, max_norm / (norm(%rows) + 1e-7), 1)
%w.1   = index_copy(%weight, %flat, %rows * %scale)     the weight from here on
```

A row named twice is written twice with the same values, scaled once.

``scale_grad_by_freq`` keeps the lookup's values and divides each position's
gradient by how often its index occurs in ``input``: the rows are
``stop_gradient(rows) + (rows - stop_gradient(rows)) * (1 / count)``, whose
value is exactly ``rows`` and whose gradient is scaled. It traces too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.eager_values import eager_array
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.torch_array import plain, traced_data
from kiln.frontend.trace import TraceContext, located_error

RENORM_EPSILON = 1e-7
"""PyTorch's ``embedding_renorm_`` divides by ``norm + 1e-7``."""


def renormalize_rows(input: Any, weight: Any, max_norm: float, norm_type: float, caller: str) -> None:
    """Scale in place each row of ``weight`` that ``input`` names and whose norm exceeds ``max_norm`` (eagerly its
    array; in a trace its traced value, written back)."""
    if TraceContext.active() and not TraceContext.current().eager:
        return _renormalize_traced_rows(input, weight, max_norm, norm_type, caller)
    indices = _host_array(input)
    rows = _weight_array(weight)
    if indices is None or rows is None:
        raise located_error(f"{caller}: max_norm renormalizes the weight in place during the forward pass, so the "
                            f"weight must be a tensor and the indices tensors or arrays, got {type(weight).__name__} "
                            f"and {type(input).__name__}")
    used = np.unique(indices.astype(np.int64, copy=False))
    norms = np.linalg.norm(rows[used], ord=norm_type, axis=1).astype(np.float64)  # in the rows' dtype, as torch
    over = norms > max_norm
    if over.any():
        scale = (max_norm / (norms[over] + RENORM_EPSILON)).astype(rows.dtype)
        rows[used[over]] *= scale[:, None]


def _renormalize_traced_rows(input: Any, weight: Any, max_norm: float, norm_type: float, caller: str) -> None:
    """``renormalize_rows`` in a trace: the rows ``input`` names, scaled where their norm exceeds ``max_norm``,
    written back into ``weight`` by an in-place ``index_copy_`` outside autograd (a parameter's traced value then is
    the written one, for the lookup, the backward and the optimizer)."""
    from kiln.frontend.grad_mode import no_grad  # lazily: grad mode builds on the tensor
    from kiln.frontend.torch_functions import where  # lazily: the torch namespace builds on the functional one

    owner = traced_data(weight)  # F.embedding(x, p.data, max_norm=1): p itself, written as p.data is
    weight = weight if owner is None else owner
    if not isinstance(weight, Tensor):
        raise located_error(f"{caller}: max_norm renormalizes the weight in place, so it must be a tensor, got "
                            f"{type(weight).__name__}")
    with no_grad():
        flat = (input if isinstance(input, Tensor) else apply("tensor.constant", value=np.asarray(input))).reshape(-1)
        rows = apply("tensor.take", weight, flat, axis=0)
        norms = rows.norm(p=norm_type, dim=1, keepdim=True).to(DType.f64)  # in the rows' dtype; the scale in double, as torch's
        scale = where(norms > max_norm, max_norm / (norms + RENORM_EPSILON), 1.0).to(rows.dtype)
        weight.index_copy_(0, flat, rows * scale)


def frequency_scaled(rows: Tensor, input: Tensor, num_embeddings: int) -> Tensor:
    """``rows`` (the lookup of ``input``'s indices) whose gradient at each position is divided by its index's count."""
    from kiln.frontend.torch_functions import ones_like  # lazily: the torch namespace builds on the functional one

    counts = apply("tensor.scatter_add", ones_like(input, dtype=rows.dtype), input, axis=0, shape=(num_embeddings,))
    share = (1.0 / apply("tensor.take", counts, input, axis=0)).unsqueeze(-1).detach()
    kept = rows.detach()
    return kept + (rows - kept) * share


def _host_array(input: Any) -> np.ndarray | None:
    if isinstance(input, Tensor):
        return eager_array(input)
    return np.asarray(input) if isinstance(input, (np.ndarray, list, tuple)) else None


def _weight_array(weight: Any) -> np.ndarray | None:
    """The array a renormalization writes: a parameter's own, or an eager tensor's (as PyTorch's in-place write)."""
    from kiln.frontend.module import ArrayLeaf

    if isinstance(weight, ArrayLeaf):
        return plain(weight.data)
    return eager_array(weight) if isinstance(weight, Tensor) else None


__all__ = ["frequency_scaled", "renormalize_rows"]
