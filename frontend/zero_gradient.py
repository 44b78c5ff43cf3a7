"""Zeros that keep a step function's result on its input's gradient path, as PyTorch's autograd does.

PyTorch records ``sign(x)``, a ``p=0`` norm (a nonzero count: ``cdist(x, y, p=0)``) and the rounding ops in the graph
of an ``x`` that requires grad: the result requires grad, and ``backward()`` gives ``x`` a zero ``.grad``, not None
(an optimizer skips a None). kiln computes these from comparisons, whose bool results end the gradient path; adding
``zeros_on_gradient_path(x)`` keeps it, with the values unchanged:

```python
sign = where(x > 0, 1, where(x < 0, -1, zeros_on_gradient_path(x)))     # 0 at 0 and NaN, as torch's
```
"""

from __future__ import annotations

from typing import Any

import numpy as np


def zeros_on_gradient_path(x: Any) -> Any:
    """Zeros of ``x``'s shape and dtype whose gradient with respect to ``x`` is zero: ``where(False, x, 0)`` (never
    ``x * 0``, which is NaN at an infinite or NaN ``x``)."""
    from kiln.frontend.tensor import apply  # lazily: the tensor builds on this module

    never = apply("tensor.constant", value=np.asarray(False))
    zero = apply("tensor.constant", value=np.asarray(0, x.dtype.numpy))
    return apply("tensor.where", never, x, zero)


__all__ = ["zeros_on_gradient_path"]
