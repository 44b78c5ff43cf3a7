"""What an eager tensor can do that a traced one cannot: give its values, and backpropagate.

```python
out = model(x)              # outside a trace: an eager Tensor (runtime/eager.py)
out.numpy(), out.item(), float(loss), out.tolist(), np.asarray(out)
if (out > 0).all(): ...     # Python control flow on values works eagerly
loss.backward()             # .grad of every parameter the loss reads (runtime/eager_backward.py)
```

A traced tensor keeps the errors of ``TorchMethods`` (its values exist only when
the compiled function runs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.eager_values import eager_array
from kiln.frontend.trace import located_error


class EagerMethods:
    """Reading values and ``backward``; ``Tensor`` inherits them before ``TorchMethods`` (whose forms refuse)."""

    def numpy(self, *, force: bool = False) -> Any:
        """The values as a NumPy array (the tensor's own array, as PyTorch's shares memory)."""
        array = eager_array(self)
        return super().numpy() if array is None else array  # type: ignore[misc]  (a traced tensor's refusal)

    def item(self) -> Any:
        array = eager_array(self)
        if array is None:
            return super().item()  # type: ignore[misc]
        if array.size != 1:
            raise ValueError(f"a Tensor with {array.size} elements cannot be converted to a Python number (item())")
        return array.item()

    def tolist(self) -> Any:
        array = eager_array(self)
        return super().tolist() if array is None else array.tolist()  # type: ignore[misc]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = eager_array(self)
        if array is None:
            raise TypeError(f"np.asarray() of a traced {getattr(self, 'type', '')}: its values exist only when the compiled "
                            "function runs; return the tensor from the function (compiled functions return NumPy arrays)")
        return array if dtype is None else array.astype(dtype)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        array = eager_array(self)
        if array is None or array.dtype.kind not in "iub" or array.size != 1:
            raise TypeError("only an eager integer tensor of one element can be used as an index")
        return int(array.item())

    def backward(self, gradient: Any = None, retain_graph: Any = None, create_graph: bool = False, inputs: Any = None) -> None:
        """Accumulate d(self)/d(parameter) into each trained parameter's ``.grad``, as PyTorch's ``backward``
        (``gradient`` weighs a non-scalar tensor; ``inputs`` limits which parameters receive one)."""
        if eager_array(self) is None:
            raise located_error("backward() of a traced tensor: inside a trace, the training step differentiates the loss "
                                "(kiln.compile_train_step), or use kiln.grad; backward() works on eager tensors, outside a trace")
        if create_graph:
            raise located_error("backward(create_graph=True): higher-order eager gradients are not supported; use "
                                "kiln.grad, which composes with itself")
        from kiln.runtime.eager_backward import backward  # lazily: the runtime builds on the frontend

        backward(self, gradient, inputs)


__all__ = ["EagerMethods"]
