"""Function transforms (``kiln.grad``, ``vjp``, ``jvp``, ``jacrev``, ``hessian``, ``vmap``) on eager tensors.

Called in a trace on traced tensors, a transform traces into the graph being built; called on arrays, it compiles
and runs, returning arrays. Called outside a trace on eager tensors (PyTorch-style code, as ``torch.func``), it takes
their arrays, compiles and runs the same way, and gives eager tensors back:

```python
x = kiln.tensor([0.5, -1.0, 2.0])
kiln.grad(lambda v: (v ** 3).sum())(x)       # an eager Tensor: 3 v^2
kiln.jacrev(model)(x)                        # as torch.func.jacrev(model)(x)
```
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.frontend.eager_values import eager_leaf
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext
from kiln.runtime.pytree import flatten, unflatten


def on_eager_tensors(leaves: Sequence[Any]) -> bool:
    """Whether a transform called with these arguments runs on eager tensors: some are Tensors, and no trace is open."""
    return not TraceContext.active() and any(isinstance(leaf, Tensor) for leaf in leaves)


def as_eager(result: Any) -> Any:
    """``result`` (arrays, nested in tuples and lists) with every array an eager tensor."""
    leaves, structure = flatten(result)
    return unflatten(structure, [eager_leaf(leaf) if isinstance(leaf, np.ndarray) else leaf for leaf in leaves])


__all__ = ["as_eager", "on_eager_tensors"]
