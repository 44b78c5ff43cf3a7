"""Whole-model checkpoints, as ``torch.save(model, f)`` / ``torch.load(f, weights_only=False)`` (word_language_model
saves its best model so and reloads it for the test run).

```python
with open("model.pt", "wb") as f:
    kiln.save(model, f)                       # the module itself: its class, attributes and arrays
with open("model.pt", "rb") as f:
    model = kiln.load(f, weights_only=False)  # unpickles: only for files you trust, as PyTorch's
```

The module is pickled (its class by reference, as PyTorch's: the defining module must be importable when loading)
into one member of the usual checkpoint file. Loading it runs code, so ``kiln.load`` refuses unless
``weights_only=False``, as ``torch.load`` does since PyTorch 2.6; ``state_dict`` checkpoints never need it.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from kiln.compiler.errors import CheckpointError

MEMBER = "__module__"
"""The checkpoint member holding the pickled module."""


def is_module(tree: Any) -> bool:
    from kiln.frontend.module import Module  # lazily: the runtime builds on the frontend

    return isinstance(tree, Module)


def pickled(module: Any) -> np.ndarray:
    """The module's pickle, as a byte array for the checkpoint file."""
    try:
        return np.frombuffer(pickle.dumps(module, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        raise CheckpointError(f"cannot save the whole {type(module).__name__}: {error}; save model.state_dict() instead "
                              "(a hook, a lambda or a traced tensor kept on the module cannot be pickled)") from None


def unpickled(members: Any, path: str, weights_only: bool) -> Any:
    """The module saved in ``members``; refused unless ``weights_only`` is False, since unpickling runs code."""
    if weights_only:
        from kiln.runtime.torch_checkpoint import WeightsOnlyError  # lazily: it imports the loaders this file serves

        raise WeightsOnlyError(f"{path} holds a whole pickled model (kiln.save(model, f)); loading it runs code from the file, "
                              "so pass kiln.load(f, weights_only=False) if you trust it, as torch.load asks, or save and "
                              "load model.state_dict() instead")
    return pickle.loads(bytes(members[MEMBER]))


__all__ = ["MEMBER", "is_module", "pickled", "unpickled"]
