"""``Tensor.apply_(callable)``: each element replaced by a Python function of it, on the host, as PyTorch's CPU
``apply_`` (pytorch-ntm's ``y_out_binarized.apply_(lambda x: 0 if x < 0.5 else 1)``).

The function sees each value as a Python number; its results are cast to the tensor's dtype (an integer tensor
truncates ``2.7`` to ``2``, as PyTorch's C++ cast). It needs the values, so it runs on eager tensors only: inside a
``kiln.compile``d function the values exist only when the graph runs. Like PyTorch it refuses a tensor that requires
grad (the write has no gradient)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kiln.frontend.trace import TraceContext, located_error


def check_applicable(tensor: Any, function: Any) -> None:
    """PyTorch's refusals: a function that is not callable, a tensor that requires grad."""
    if not callable(function):
        raise TypeError(f"apply_(): argument 'callable' must be callable, not {type(function).__name__}")
    if tensor.requires_grad:
        raise RuntimeError("Can't call apply_() on Variable that requires grad. Use var.detach().apply_() instead.")


def applied_elementwise(tensor: Any, function: Callable[[Any], Any]) -> Any:
    """A constant of ``function`` applied to each of ``tensor``'s values, in its shape and dtype."""
    from kiln.frontend.tensor import apply

    if not TraceContext.current().eager:
        raise located_error("apply_ calls a Python function on each value, and a traced tensor's values exist only when "
                            "the compiled function runs; return the tensor and call apply_ on the result outside")
    values = np.asarray(tensor.numpy())
    results = np.asarray([function(value) for value in values.ravel().tolist()])
    return apply("tensor.constant", value=results.astype(values.dtype).reshape(values.shape))
