"""torch's refusal of an index assignment's value that is neither a tensor nor a number.

```python
t = torch.zeros(2, 3)
t[0] = np.array([1., 2., 3.])     # TypeError: can't assign a numpy.ndarray to a torch.FloatTensor
t[0] = [1., 2., 3.]               # TypeError: can't assign a list to a torch.FloatTensor
t[0, 1] = np.float32(5)           # TypeError: can't assign a numpy.float32 to a torch.FloatTensor
t[0, 1] = np.float64(5)           # fine: a Python float (NumPy's float64 subclasses it), as an int64 scalar is
```

kiln assigned them, so a program written against kiln failed under torch. A parameter's ``.data`` and ``.grad``
(kiln's ``TorchArray``, torch's tensors) are tensors here.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.tensor_type_call import TYPE_NAMES
from kiln.frontend.torch_array import TorchArray


class AssignedValueTypeError(TraceError, TypeError):
    """An index assignment's value of a type torch does not assign: a ``TypeError``, as torch's."""


def check_assigned_value(destination: Any, value: Any) -> None:
    """Refuse ``destination[index] = value`` as torch does for a value that is not a tensor or a number (a NumPy
    array, a list or tuple, a NumPy float32/float16/bool scalar, which subclass no Python number)."""
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on its checks

    if isinstance(value, (Tensor, TorchArray)) or _is_number(value):
        return
    kind = type(value).__qualname__ if type(value).__module__ == "builtins" else f"{type(value).__module__}.{type(value).__qualname__}"
    raise located(AssignedValueTypeError, f"can't assign a {kind} to a torch.{TYPE_NAMES.get(destination.dtype, 'Tensor')} "
                  "(as torch: make it a tensor first, t[index] = torch.as_tensor(value, dtype=t.dtype))")


def _is_number(value: Any) -> bool:
    """A Python number as torch reads one: NumPy's integer scalars and its float64/complex128 (Python float and
    complex subclasses) too, not its other scalars."""
    if isinstance(value, np.generic):
        return isinstance(value, (np.integer, float, complex))
    return isinstance(value, numbers.Number) and not isinstance(value, np.ndarray)


__all__ = ["AssignedValueTypeError", "check_assigned_value"]
