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

COPIES: "weakref.WeakSet[Value]" = weakref.WeakSet()
"""Eager values ``clone()`` made (a ``tensor.broadcast_to`` of the source to its own shape, given its own array): new
storage in PyTorch, so no view of the source; a later write to the source leaves a backward that saved the copy
alone (``runtime/saved_versions.py``)."""

FROZEN_READS: "weakref.WeakKeyDictionary[Value, bool]" = weakref.WeakKeyDictionary()
"""The eager leaf values that read a parameter while it required no grad: PyTorch decides when an op runs whether its
result requires grad, so ``backward()`` never reaches such a read, whatever the parameter's flag is then
(``trained_parameter``)."""


GRAD_TENSORS: "weakref.WeakKeyDictionary[Value, weakref.ref[Any]]" = weakref.WeakKeyDictionary()
"""Eager tensors (not parameters) whose ``.grad`` a ``backward()`` fills: ``x.requires_grad_()`` on a leaf, or
``h.retain_grad()`` on a result; keyed by their value, holding the tensor weakly."""


TENSOR_HOOKS: "weakref.WeakKeyDictionary[Value, dict[int, Any]]" = weakref.WeakKeyDictionary()
"""``tensor.register_hook`` hooks by the eager value they watch (``runtime/eager_hooks.py``)."""


def updates(parameter: Any) -> int:
    """How many eager ``optimizer.step()`` calls have written ``parameter`` in place."""
    return parameter.__dict__.get("eager_updates", 0)


def trained_parameter(value: Value) -> "Parameter | None":
    """The parameter the eager leaf ``value`` reads, if it required grad when read: DreamerV2's ``RequiresGrad``
    freezes a model (``requires_grad_(False)``) after its forward and before the loss's ``backward()``, which still
    reaches it, as in PyTorch; a parameter unfrozen after the forward gets no gradient from it."""
    parameter = PARAMETERS.get(value, (None, 0))[0]
    return None if parameter is None or value in FROZEN_READS else parameter


def count_update(parameter: Any) -> None:
    parameter.__dict__["eager_updates"] = updates(parameter) + 1


_ARRAY_TYPES: dict[tuple[tuple[int, ...], np.dtype], Any] = {}


def array_type(array: Any) -> Any:
    """``TensorType.of_array(array)``, shared per shape and dtype (types are immutable; building one costs
    microseconds, and eager mode reads every parameter at every use)."""
    key = (array.shape, array.dtype)
    known = _ARRAY_TYPES.get(key)
    if known is None:
        from kiln.compiler.ir.types import TensorType  # lazily, as eager_leaf's

        known = TensorType.of_array(array)  # an unsupported dtype raises here, every time: it is never kept
        if len(_ARRAY_TYPES) < 4096:
            _ARRAY_TYPES[key] = known
    return known


def eager_leaf(array: Any) -> Any:
    """A new eager tensor holding ``array`` (not copied), with no chain behind it."""
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on this module

    array = np.asarray(array)
    value = Value(array_type(array), None, 0, None)
    ARRAYS[value] = array
    return Tensor(value)


def eager_value(tensor: Any) -> Value | None:
    """The IR value of an eager ``Tensor`` (one whose values exist now; not a ``Parameter``), else None."""
    value = getattr(tensor, "__dict__", {}).get("_value")
    return value if value is not None and value in ARRAYS else None


def eager_array(tensor: Any) -> np.ndarray | None:
    """The array of an eager ``Tensor`` (not a ``Parameter``, which has ``.data``), else None. A tensor whose PyTorch
    storage was written through another view is refused (``tensor_inplace.check_fresh``): its array is the old values."""
    if "_stale" in tensor.__dict__:
        from kiln.frontend.tensor_inplace import check_fresh  # lazily: in-place writes build on this module

        check_fresh(tensor)
    value = tensor.__dict__.get("_value")
    array = None if value is None else ARRAYS.get(value)
    stack = trace_stack() if array is not None else ()
    if stack and stack[-1].lifting is not None:  # values read in a kiln.compile trace: guarded (frontend/lifted_tensors.py)
        stack[-1].lifting.guard(tensor, array)
    return array


def trace_stack() -> Any:
    """This thread's running traces, innermost last (``TraceContext``'s stack; empty outside any)."""
    global _THREAD_TRACES
    if _THREAD_TRACES is None:
        from kiln.frontend.trace import TraceContext  # lazily (once): the trace builds on this module

        _THREAD_TRACES = TraceContext._local
    return _THREAD_TRACES.__dict__.get("stack", ())


_THREAD_TRACES: Any = None


__all__ = ["ARRAYS", "FROZEN_READS", "GRAD_TENSORS", "PARAMETERS", "TENSOR_HOOKS", "array_type", "count_update", "eager_array",
           "eager_leaf", "eager_value", "trace_stack", "trained_parameter", "updates"]
