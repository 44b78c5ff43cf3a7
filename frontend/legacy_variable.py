"""``torch.autograd.Variable``: the pre-0.4 wrapper that code such as NVIDIA's Tacotron 2 still writes.

```python
decoder_input = Variable(memory.data.new(B, n_mel_channels).zero_())   # a tensor of zeros, no gradient
weight = Variable(kiln.zeros(3), requires_grad=True)                     # a new leaf that requires grad
w_sum = torch.sum(Variable(model.state_dict()['fc1.weight']) ** 2, dim=1)  # a state_dict entry's tensor
isinstance(kiln.ones(2), Variable)                                       # True: every tensor is a Variable
```

Since PyTorch 0.4 a Variable is a tensor: ``Variable(data)`` returns ``data.detach()`` (the same values, cut from
the graph) with ``requires_grad`` as given (default False), and ``isinstance(t, Variable)`` holds for every tensor.
``volatile`` has no effect (PyTorch warns, and points to ``no_grad``).
"""

from __future__ import annotations

import warnings
from typing import Any

from kiln.compiler.errors import TraceError
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_array import TorchArray
from kiln.frontend.trace import located_error


class VariableDataError(TraceError, TypeError):
    """``Variable(data)`` of something that is not a tensor (PyTorch raises TypeError)."""


class _VariableMeta(type):
    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, Tensor)


class Variable(metaclass=_VariableMeta):
    """``Variable(data, requires_grad=False, volatile=False)``: ``data.detach()``, requiring grad if asked."""

    def __new__(cls, data: Any = None, requires_grad: bool = False, volatile: bool = False) -> Any:
        import kiln

        if volatile:
            warnings.warn("volatile was removed and now has no effect. Use `with torch.no_grad():` instead.",
                          UserWarning, stacklevel=2)
        if data is None:
            data = kiln.tensor([])
        if isinstance(data, TorchArray):  # p.data, a state_dict() entry: the tensor it stands for (traced, in a trace)
            data = data.detach()
        if not isinstance(data, Tensor):
            raise located_error(f"Variable data has to be a tensor, but got {type(data).__name__}",
                                kind=VariableDataError)
        variable = data.detach()
        return variable.requires_grad_(True) if requires_grad else variable
