"""``F.embedding``'s ``max_norm`` and ``scale_grad_by_freq``, as PyTorch's.

```python
emb = nn.Embedding(10_000, 64, max_norm=1.0)   # rows looked up are renormalized in place first (eager)
emb = nn.Embedding(10_000, 64, scale_grad_by_freq=True)   # a row's gradient is divided by its count in the batch
```

``max_norm`` is PyTorch's ``embedding_renorm_``: before the lookup, each row
the indices name whose ``norm_type``-norm exceeds ``max_norm`` is scaled in
place by ``max_norm / (norm + 1e-7)``, outside autograd, so the gradient is the
plain lookup's. It writes the weight, so it runs eagerly only: a traced graph
is pure and refuses it with what to do instead.

``scale_grad_by_freq`` keeps the lookup's values and divides each position's
gradient by how often its index occurs in ``input``: the rows are
``stop_gradient(rows) + (rows - stop_gradient(rows)) * (1 / count)``, whose
value is exactly ``rows`` and whose gradient is scaled. It traces too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.eager_values import eager_array
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.torch_array import plain
from kiln.frontend.trace import TraceContext, located_error

RENORM_EPSILON = 1e-7
"""PyTorch's ``embedding_renorm_`` divides by ``norm + 1e-7``."""


def renormalize_rows(input: Any, weight: Any, max_norm: float, norm_type: float, caller: str) -> None:
    """Scale in place each row of ``weight`` that ``input`` names and whose norm exceeds ``max_norm`` (eager only)."""
    indices = _host_array(input)
    rows = _weight_array(weight)
    if indices is None or rows is None or (TraceContext.active() and not TraceContext.current().eager):
        raise located_error(f"{caller}: max_norm renormalizes the weight in place during the forward pass in PyTorch; a "
                            "traced graph is pure, so renormalize the rows between steps (kiln.nn.init-style, on "
                            "weight.data), or run the model eagerly")
    used = np.unique(indices.astype(np.int64, copy=False))
    norms = np.linalg.norm(rows[used], ord=norm_type, axis=1).astype(np.float64)  # in the rows' dtype, as torch
    over = norms > max_norm
    if over.any():
        scale = (max_norm / (norms[over] + RENORM_EPSILON)).astype(rows.dtype)
        rows[used[over]] *= scale[:, None]


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
    from kiln.frontend.module import Parameter

    if isinstance(weight, Parameter):
        return plain(weight.data)
    return eager_array(weight) if isinstance(weight, Tensor) else None


__all__ = ["frequency_scaled", "renormalize_rows"]
