"""A ``kiln.compile``'d function that writes one of its tensor arguments in place (SwAV's queue:
``queue[i, bs:] = queue[i, :-bs].clone()``, ``queue[i, :bs] = embedding[...]``; ``x.add_(1)``) writes the caller's
tensor at every call, as ``torch.compile`` keeps an input's mutation.

The trace sees the write as the argument's Tensor rebound to a new value (``tensor.scatter``, ``tensor.add``); the
argument's final value becomes an extra output after the function's own, and each call copies it into the caller's
tensor (an eager ``copy_``: its views follow or go stale, as after any in-place write).

```python
def step(x, queue):                       # traced: queue's value at the end is an output
    queue[0, 1:] = queue[0, :-1].clone()
    queue[0, :1] = x
    return x.sum()
```
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.frontend.tensor import Tensor


def values_before(inputs: Sequence[Any]) -> list[Any]:
    """Each traced argument's value as the trace starts (None for what is not a Tensor)."""
    return [item.value if isinstance(item, Tensor) else None for item in inputs]


def written_arguments(inputs: Sequence[Any], before: Sequence[Any]) -> tuple[int, ...]:
    """The positions of the arguments the function wrote in place: their Tensor holds another value now."""
    return tuple(k for k, (item, value) in enumerate(zip(inputs, before))
                 if value is not None and item.value is not value)


def refuse_argument_writes(inputs: Sequence[Any], before: Sequence[Any], name: str) -> None:
    """Raise where a function traced for a call with gradients enabled (``compiled_training.py``: its backward runs
    later, eagerly) wrote an argument in place: that path does not write arguments back (yet), and dropping the write
    would be silent; refused, the call runs eagerly (warned) or, with ``fullgraph``, raises."""
    from kiln.compiler.errors import TraceError  # lazily: the runtime's errors import nothing from here

    written = written_arguments(inputs, before)
    if written:
        raise TraceError(
            f"{name} writes its argument {written[0]} in place (x.add_(...), x[i] = ...) in a call with gradients "
            "enabled, whose compiled forward does not write arguments back; call it under kiln.no_grad(), compile the "
            "whole training step (loss.backward() and optimizer.step() inside), or write the tensor outside the call")


def write_back_arguments(arguments: Sequence[Any], written: Sequence[int], outputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """The function's own outputs, after the last ``len(written)`` (the written arguments' new values, in order) went
    into the caller's arguments: a tensor by ``copy_`` without gradient, a NumPy array by ``np.copyto``."""
    if not written:
        return outputs
    from kiln.frontend.eager_values import eager_leaf  # lazily: eager values build on the runtime
    from kiln.frontend.grad_mode import no_grad

    own, new_values = outputs[: len(outputs) - len(written)], outputs[len(outputs) - len(written) :]
    with no_grad():
        for k, values in zip(written, new_values):
            target = arguments[k]
            if isinstance(target, Tensor):
                target.copy_(eager_leaf(np.array(values)))
            elif isinstance(target, np.ndarray):
                np.copyto(target, values)
    return own


def marked_arguments(inputs: Sequence[Any], marked: Sequence[Any]) -> tuple[int, ...]:
    """The positions of the arguments a compiled step marked by ``requires_grad_()`` (rosinality's R1 step:
    ``real_img.requires_grad = True``): the caller's tensors require grad after the call, as torch's eager code leaves
    them, and get the ``.grad`` the step's ``backward()`` gave them."""
    ids = {id(tensor) for tensor in marked}
    return tuple(k for k, item in enumerate(inputs) if isinstance(item, Tensor) and id(item) in ids)


def write_back_argument_grads(arguments: Sequence[Any], marked: Sequence[int], with_grad: Sequence[int],
                              outputs: tuple[Any, ...], whole: Sequence[int] = ()) -> tuple[Any, ...]:
    """The outputs before the last ``len(with_grad)`` (the ``.grad`` a step's ``backward()`` gave the arguments at
    ``with_grad``, in order): each marked argument made to require grad, and those gradients added to its ``.grad``, as
    torch's ``backward()`` accumulates them. The arguments at ``whole`` (leaves given to the step, whose traced ``.grad``
    started from theirs) take the step's ``.grad`` as it is, None where the step cleared it."""
    from kiln.frontend.eager_values import eager_leaf  # lazily: eager values build on the runtime

    own, grads = outputs[: len(outputs) - len(with_grad)], outputs[len(outputs) - len(with_grad) :]
    for k in marked:
        if isinstance(arguments[k], Tensor) and not arguments[k].requires_grad:
            arguments[k].requires_grad_(True)
    for k in whole:
        if k not in with_grad:
            arguments[k].grad = None
    for k, grad in zip(with_grad, grads):
        target, value = arguments[k], eager_leaf(np.array(grad))
        if isinstance(target, Tensor):
            target.grad = value if target.grad is None or k in whole else target.grad + value
    return own


__all__ = ["marked_arguments", "refuse_argument_writes", "values_before", "write_back_argument_grads",
           "write_back_arguments", "written_arguments"]
