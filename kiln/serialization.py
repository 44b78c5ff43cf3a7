"""``kiln.serialization``: PyTorch's ``torch.serialization`` for checkpoints (``runtime/safe_globals.py``).

```python
kiln.serialization.add_safe_globals([argparse.Namespace])    # weights_only=True then loads DiT's args
with kiln.serialization.safe_globals([np._core.multiarray.scalar, np.dtype]):
    state = kiln.load("dino.pth")
kiln.serialization.get_unsafe_globals_in_checkpoint("run.pt")
```

``save`` and ``load`` are ``kiln.save`` and ``kiln.load`` (torch.serialization's own); ``DEFAULT_PROTOCOL`` is the pickle
protocol ``kiln.save`` writes with, torch's 2.
"""

from kiln.runtime.checkpoint import load, save
from kiln.runtime.safe_globals import (add_safe_globals, clear_safe_globals, get_safe_globals, get_unsafe_globals_in_checkpoint,
                                       safe_globals)

DEFAULT_PROTOCOL = 2

__all__ = ["DEFAULT_PROTOCOL", "add_safe_globals", "clear_safe_globals", "get_safe_globals", "get_unsafe_globals_in_checkpoint",
           "load", "safe_globals", "save"]
