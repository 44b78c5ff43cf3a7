"""The NumPy array behind ``parameter.data`` and ``parameter.grad``, answering PyTorch's tensor methods too.

kiln keeps a parameter's value and an eager gradient as NumPy arrays (every
backend and optimizer reads them as such). PyTorch programs also call tensor
methods on them: ``p.data.add_(p.grad, alpha=-lr)``, ``m.weight.data.normal_(0,
0.02)``, ``p.grad.data.zero_()``, ``p.grad.norm()``. A ``TorchArray`` is a view
of the same memory that keeps NumPy's behaviour for everything NumPy has, and
answers a name only PyTorch's tensors have (``add_``, ``normal_``, ``zero_``,
``clone``, ``norm``, ``numel``...) through a non-trainable ``Parameter`` sharing
its memory: in-place methods write into the array, others give eager tensors.

```python
p.data.add_(p.grad, alpha=-0.1)      # the SGD step of word_language_model, in place
p.grad.data.zero_()
```

Where NumPy and PyTorch share a name with different meanings, NumPy's wins
(``size`` is the element count, ``view`` takes a dtype, ``std`` is the
population standard deviation): use ``p.detach()``, a tensor, for PyTorch's.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class TorchArray(np.ndarray):
    """An ndarray view that also answers PyTorch's tensor-only methods (see the module docstring)."""

    @property
    def data(self) -> "TorchArray":  # type: ignore[override]  (PyTorch's ``.data``, not the buffer's memoryview)
        return self

    def __repr__(self) -> str:
        return repr(self.view(np.ndarray))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "owner":
            raise AttributeError(name)
        traced = traced_data(self)
        if traced is not None:  # p.data.mul_(0.9) in a kiln.compile'd function: p's traced value, written as p's
            return traced_method(traced, name)
        tensor = shared_parameter(self)
        if not hasattr(type(tensor), name):
            raise AttributeError(f"'{type(self).__name__}' (a parameter's NumPy array) has no attribute {name!r}")
        method = getattr(tensor, name)
        if not name.endswith("_") or not callable(method):
            return method
        return lambda *args, **kwargs: (method(*args, **kwargs), self)[1]  # in place: the array itself, as PyTorch's


def traced_data(array: Any) -> Any:
    """In a trace (not eagerly), the parameter whose ``.data`` ``array`` is, else None: its ``.data`` then stands for
    the parameter's traced value, not the array's values when the trace ran (a constant, stale at the next call)."""
    owner = array.__dict__.get("owner") if type(array) is TorchArray else None
    if owner is None:  # (most calls: a number or a plain array, at the cost of one type check)
        return None
    from kiln.frontend.trace import TraceContext  # lazily: the trace builds on this module's users

    return owner() if TraceContext.active() and not TraceContext.current().eager else None


def traced_method(parameter: Any, name: str) -> Any:
    """``parameter.data.<name>`` in a trace: an in-place method writes the parameter as under ``no_grad`` (returning
    its ``.data``, as PyTorch's returns the tensor written); any other reads its value without a gradient."""
    from kiln.frontend.grad_mode import no_grad  # lazily: grad mode builds on the tensor

    method = getattr(parameter if name.endswith("_") else parameter.detach(), name)

    def traced(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = [_traced(a) for a in args], {k: _traced(v) for k, v in kwargs.items()}
        if not name.endswith("_"):
            return method(*args, **kwargs)
        with no_grad():
            method(*args, **kwargs)
        return parameter.data

    return traced if callable(method) else method


def _traced(value: Any) -> Any:
    """Another parameter's ``.data`` among the arguments (``e.data.add_(p.data, alpha=0.1)``): its traced value."""
    owner = traced_data(value)
    return value if owner is None else owner.detach()


def shared_parameter(array: np.ndarray) -> Any:
    """A non-trainable ``Parameter`` whose array is ``array`` itself (not a copy)."""
    from kiln.frontend.module import Parameter  # lazily: the module builds on this one

    parameter = Parameter.__new__(Parameter)
    parameter.requires_grad = False
    parameter.data = np.asarray(array)
    return parameter


def torch_array(array: Any) -> Any:
    """A NumPy ``array`` seen as a ``TorchArray`` (the same memory); anything else as it is."""
    return array.view(TorchArray) if type(array) is np.ndarray else array


def plain(array: Any) -> Any:
    """A ``TorchArray`` as a plain ndarray view (the same memory), for compiled code: NumPy wraps every result of a
    subclass in the subclass, which costs microseconds an op; anything else as it is."""
    return array.view(np.ndarray) if type(array) is TorchArray else array


__all__ = ["TorchArray", "plain", "shared_parameter", "torch_array"]
