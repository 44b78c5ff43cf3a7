"""A model whose gradient is known exactly in any dtype, to test optimizer updates apart from autodiff's rounding.

```python
model = Scaled(np.ones(4, np.float16))   # forward(x) = w * x: the gradient of (w * x).sum() is x (summed over a batch)
step = kiln.compile_train_step(model, lambda out, target: out.sum(), optimizer)
```
"""

from __future__ import annotations

import numpy as np

import kiln.nn as nn


class Scaled(nn.Module):
    """``w * x``: the gradient of ``sum(w * x)`` is ``x`` (a batch: ``x.sum(0)``, one rounding, as PyTorch's)."""

    def __init__(self, value: np.ndarray):
        super().__init__()
        self.w = nn.Parameter(value)

    def forward(self, x):
        return self.w * x
