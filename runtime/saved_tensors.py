"""What ``kiln.save`` writes for a tensor in the tree, in either format: its array and, for a ``Parameter``, its
``requires_grad``.

An eager tensor saves its values (``kiln.save({"x": x}, f)``, as ``torch.save``); a ``Parameter`` its ``.data`` and
``requires_grad`` (it loads as a ``Parameter``), a module's buffer (``bn.running_var``) its values, as a plain tensor; a complex tensor (a pair of real tensors, ``frontend/complex_tensor.py``)
one complex array. A traced tensor has no values and is refused, naming where it is in the tree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import CheckpointError


def tensor_array(node: Any, where: str) -> tuple[Any, bool | None]:
    """``(array, requires_grad)`` for a ``Parameter``, ``(array, None)`` for another eager tensor, and ``(node, None)``
    for anything that is not a kiln tensor (a NumPy array among them: the caller decides what it is)."""
    from kiln.frontend.complex_tensor import ComplexTensor
    from kiln.frontend.eager_values import eager_array  # lazily: the runtime imports nothing of the frontend at load
    from kiln.frontend.module import ArrayLeaf, Buffer
    from kiln.frontend.tensor import Tensor

    if not isinstance(node, Tensor):
        return node, None
    if isinstance(node, Buffer):  # a module's buffer, kiln's Parameter subclass: torch's is a plain tensor
        return node.data, None
    if isinstance(node, ArrayLeaf):
        return node.data, bool(node.requires_grad)
    array = eager_array(node)
    if array is None and isinstance(node, ComplexTensor):
        return np.asarray(node), None  # a pair of real tensors, saved as one complex array
    if array is None:
        raise CheckpointError(f"cannot save {where}: a traced tensor ({node.type}) has no values; save outside the traced "
                              "function (the model's state_dict(), or the compiled function's outputs)")
    return array, None


__all__ = ["tensor_array"]
