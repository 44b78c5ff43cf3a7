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
        if name.startswith("_"):
            raise AttributeError(name)
        tensor = shared_parameter(self)
        if not hasattr(type(tensor), name):
            raise AttributeError(f"'{type(self).__name__}' (a parameter's NumPy array) has no attribute {name!r}")
        method = getattr(tensor, name)
        if not name.endswith("_") or not callable(method):
            return method
        return lambda *args, **kwargs: (method(*args, **kwargs), self)[1]  # in place: the array itself, as PyTorch's


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
