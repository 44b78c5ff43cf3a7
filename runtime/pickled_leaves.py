"""Objects other than arrays, numbers, strings and containers in a checkpoint tree, as ``torch.save`` takes them.

DiT's train.py saves ``{"model": ..., "ema": ..., "opt": ..., "args": args}`` with ``args`` an
``argparse.Namespace``; ``kiln.save`` refused the whole checkpoint. Such a leaf is pickled into a member of its own
(``{"pickled": member}`` in the tree). Loading a class outside torch 2.13's ``weights_only`` allow-list runs code, so
``kiln.load`` refuses it unless ``weights_only=False``, with torch's ``UnpicklingError`` ("Weights only load failed
... Unsupported global"), as ``torch.load`` does for the same file (DiT's ``find_model`` then needs
``weights_only=False`` in both).
"""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

import numpy as np

from kiln.compiler.errors import CheckpointError
from kiln.runtime.safe_globals import user_safe_global

TORCH_PROTOCOL = 2
"""torch.save's pickle protocol: a set, frozenset or bytes then names its class, which the allow-list checks as torch's
(protocol 4 writes them as opcodes that would pass any check)."""


def pickled_leaf(node: Any, arrays: dict[str, np.ndarray], where: str) -> dict[str, str]:
    """The tree entry of ``node``, its pickle stored in ``arrays`` under a fresh member name."""
    try:
        content = pickle.dumps(node, protocol=TORCH_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        raise CheckpointError(f"cannot save {where}: a {type(node).__name__} is not an array, number, string, list or "
                              f"dict, and pickling it failed ({error}); save its state (a dict) instead") from None
    name = f"p{len(arrays)}"
    arrays[name] = np.frombuffer(content, dtype=np.uint8)
    return {"pickled": name}


def unpickled_leaf(member: np.ndarray, weights_only: bool, path: str) -> Any:
    """The object pickled in ``member``. Under ``weights_only`` only torch 2.13's allow-list unpickles (a ``set``,
    ``complex``, ``Counter``, bytes); any other class is refused in torch's words, since unpickling it runs code."""
    content = io.BytesIO(bytes(member))
    return _AllowListUnpickler(content, path).load() if weights_only else pickle.load(content)


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        from kiln.runtime.torch_checkpoint import ALLOWED, WeightsOnlyError  # lazily: it imports the loaders

        module = "builtins" if module == "__builtin__" else module  # protocol 2's name for it
        if (module, name) in ALLOWED:
            return ALLOWED[module, name]
        if user_safe_global(module, name) is not None:  # kiln.serialization.add_safe_globals
            return user_safe_global(module, name)
        raise WeightsOnlyError(
            f"Weights only load failed. {self.path} holds a pickled {module}.{name} (kiln.save of an object that is "
            "not an array, number, string, list or dict). Re-running kiln.load with weights_only=False will likely "
            "succeed, but it runs code from the file: do it only if you got the file from a trusted source, as "
            f"torch.load asks. WeightsUnpickler error: Unsupported global: GLOBAL {module}.{name} was not an allowed "
            "global by default.")


__all__ = ["pickled_leaf", "unpickled_leaf"]
