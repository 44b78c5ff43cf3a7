"""The concrete arrays behind eager tensors, keyed weakly by their IR values.

Outside a trace, kiln runs PyTorch-style code eagerly (``runtime/eager.py``):
each op is built as in a trace and run at once, and its results' arrays are
kept here. A value is dropped with the last tensor (or later op) that refers
to it, so an eager loop holds only what the user's variables keep alive.

```python
out = model(x)                  # an eager Tensor: eager_array(out) is its array
out.numpy(), out.item()          # read it
```
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.compiler.ir.core import Value

if TYPE_CHECKING:
    from kiln.frontend.module import Parameter

ARRAYS: "weakref.WeakKeyDictionary[Value, np.ndarray]" = weakref.WeakKeyDictionary()
"""Each eager value's array: an op's result, a parameter's array (at the time it was read) or a fed array."""
PARAMETERS: "weakref.WeakKeyDictionary[Value, tuple[Parameter, int]]" = weakref.WeakKeyDictionary()
"""The parameter each eager leaf value reads (``loss.backward()`` accumulates its gradient into ``parameter.grad``), and
its ``updates`` count then: an ``optimizer.step()`` between the read and the backward is an error, as in PyTorch."""


GRAD_TENSORS: "weakref.WeakKeyDictionary[Value, weakref.ref[Any]]" = weakref.WeakKeyDictionary()
"""Eager tensors (not parameters) whose ``.grad`` a ``backward()`` fills: ``x.requires_grad_()`` on a leaf, or
``h.retain_grad()`` on a result; keyed by their value, holding the tensor weakly."""


TENSOR_HOOKS: "weakref.WeakKeyDictionary[Value, dict[int, Any]]" = weakref.WeakKeyDictionary()
"""``tensor.register_hook`` hooks by the eager value they watch (``runtime/eager_hooks.py``)."""


def updates(parameter: Any) -> int:
    """How many eager ``optimizer.step()`` calls have written ``parameter`` in place."""
    return parameter.__dict__.get("eager_updates", 0)


def count_update(parameter: Any) -> None:
    parameter.__dict__["eager_updates"] = updates(parameter) + 1


def eager_leaf(array: Any) -> Any:
    """A new eager tensor holding ``array`` (not copied), with no chain behind it."""
    from kiln.compiler.ir.types import TensorType
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on this module

    array = np.asarray(array)
    value = Value(TensorType.of_array(array), None, 0, None)
    ARRAYS[value] = array
    return Tensor(value)


def eager_array(tensor: Any) -> np.ndarray | None:
    """The array of an eager ``Tensor`` (not a ``Parameter``, which has ``.data``), else None."""
    value = tensor.__dict__.get("_value")
    return None if value is None else ARRAYS.get(value)


__all__ = ["ARRAYS", "GRAD_TENSORS", "PARAMETERS", "TENSOR_HOOKS", "count_update", "eager_array", "eager_leaf", "updates"]
