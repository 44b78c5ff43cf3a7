"""``kiln.backends.cudnn``: the ``torch.backends.cudnn`` flags PyTorch scripts set, so they run unchanged.

kiln's GPU backend (CuPy) generates its own kernels and calls no cuDNN: there is nothing to benchmark or to make
deterministic, so the flags are kept (a script may read back what it set) and change nothing. kiln's results do not
depend on them: the same compiled step gives the same numbers on every call.

```python
import kiln.backends.cudnn as cudnn     # dcgan/main.py's "import torch.backends.cudnn as cudnn"
cudnn.benchmark = True
cudnn.is_available()                     # False: no kiln backend calls cuDNN
```
"""

from __future__ import annotations

benchmark: bool = False
"""PyTorch's default; kiln has no cuDNN algorithm search to turn on."""
deterministic: bool = False
"""PyTorch's default; kiln's kernels are deterministic either way."""
enabled: bool = True
allow_tf32: bool = True


def is_available() -> bool:
    """False: no kiln backend calls cuDNN (CuPy's kernels are generated; ``kiln.cuda.is_available()`` asks for a GPU)."""
    return False


def version() -> None:
    """None, as ``torch.backends.cudnn.version()`` where cuDNN is not available."""
    return None
