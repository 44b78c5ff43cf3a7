"""``kiln.backends.mps``: ``torch.backends.mps``'s questions, answered for kiln, which has no Metal backend.

```python
use_mps = args.mps and kiln.backends.mps.is_available()   # False: the NumPy (CPU) or CuPy (CUDA) backend runs
```
"""

from __future__ import annotations


def is_available() -> bool:
    """False: kiln has no Metal (Apple GPU) backend."""
    return False


def is_built() -> bool:
    """False, as a PyTorch built without MPS answers."""
    return False
