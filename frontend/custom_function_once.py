"""``@once_differentiable``: a ``kiln.autograd.Function`` backward that runs without grad and refuses a derivative.

```python
class Clamp(kiln.autograd.Function):
    @staticmethod
    @once_differentiable            # from kiln.autograd.function import once_differentiable
    def backward(ctx, grad):
        ...                         # runs under no_grad: nothing in it is differentiated
```

As PyTorch's: the backward runs under ``no_grad``; where one of its incoming gradients requires grad
(``create_graph=True`` past an op that makes the gradient depend on a parameter), each gradient it returns still
requires grad, and a derivative that reaches it raises "trying to differentiate twice a function that was marked with
@once_differentiable" (PyTorch's ``DelayedError`` node).

kiln traces the backward, so the refusal is a marker in its graph: each returned gradient ``r`` becomes
``where(ONCE_MASK, sum(incoming gradients), r)``, whose value is ``r`` exactly and which requires grad exactly when
an incoming gradient does. ``ONCE_MASK`` is one array object, so the marker is found by identity in an eager chain
(``check_once_differentiable``, called when ``backward()`` or ``kiln.autograd.grad`` builds the chain of a second
derivative). A derivative of a derivative taken inside a trace (``kiln.grad`` of ``kiln.grad``) is not refused: the
marker's own derivative is zero there, so the second derivative leaves the backward out.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.core import Op, Value

ONCE_MASK = np.zeros((), dtype=bool)
"""The all-False mask of the marker ``where``: identified by identity (``is``), never by value."""
USED = [False]
"""Whether a once-differentiable backward was ever traced: only then do eager chains look for markers."""
MESSAGE = "trying to differentiate twice a function that was marked with @once_differentiable"


class OnceDifferentiableError(TraceError, RuntimeError):
    """A derivative through a ``@once_differentiable`` backward: a ``RuntimeError``, as PyTorch's."""


def once_differentiable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Function's ``backward``: run it under ``no_grad``, and mark its gradients as not differentiable again."""
    from kiln.frontend.grad_mode import is_grad_enabled, no_grad

    @functools.wraps(fn)
    def wrapper(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        with no_grad():
            outputs = fn(ctx, *args, **kwargs)
        incoming = [a for a in args if _is_float_tensor(a)]
        if not is_grad_enabled() or not incoming:
            return outputs
        USED[0] = True
        if isinstance(outputs, tuple):
            return tuple(_marked(o, incoming) for o in outputs)
        return _marked(outputs, incoming)

    return wrapper


def _is_float_tensor(item: Any) -> bool:
    from kiln.frontend.tensor import Tensor

    return isinstance(item, Tensor) and item.dtype.is_float


def _marked(output: Any, incoming: list[Any]) -> Any:
    """``output`` through the marker ``where``, depending on every incoming gradient (for ``requires_grad``)."""
    from kiln.frontend.tensor import Tensor
    from kiln.frontend.trace import TraceContext

    if not _is_float_tensor(output):
        return output
    context = TraceContext.current()
    total = None
    for grad in incoming:
        part = context.emit("tensor.reduce_sum", grad.value, axes=None, keepdims=False)
        if part.type.dtype is not output.dtype:
            part = context.emit("tensor.cast", part, dtype=output.dtype)
        total = part if total is None else context.emit("tensor.add", total, part)
    mask = context.emit("tensor.constant", value=ONCE_MASK)
    return Tensor(context.emit("tensor.where", mask, total, output.value))


def is_marker(op: Op) -> bool:
    """Whether ``op`` is a once-differentiable marker (its mask is ``ONCE_MASK`` itself)."""
    if op.name != "tensor.where" or not op.operands:
        return False
    maker = op.operands[0].producer
    return maker is not None and maker.name == "tensor.constant" and maker.attrs.get("value") is ONCE_MASK


def check_once_differentiable(ops: list[Op], requires_grad: Callable[[Value], bool]) -> None:
    """Refuse, as PyTorch's ``DelayedError``, a chain (its ``ops``) that differentiates through a marker whose incoming
    gradients require grad."""
    from kiln.frontend.inplace_leaf_checks import located

    for op in ops:
        if is_marker(op) and requires_grad(op.operands[1]):
            raise located(OnceDifferentiableError, MESSAGE)


__all__ = ["ONCE_MASK", "OnceDifferentiableError", "check_once_differentiable", "is_marker", "once_differentiable"]
