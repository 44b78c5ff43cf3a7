"""``kiln.no_grad()``: PyTorch's ``torch.no_grad`` for traced code, as a context manager or a decorator.

Inside a compiled step (or ``kiln.grad``) autodiff runs over the traced graph. What ``torch.no_grad`` means there is
that the values computed inside it are constants to the gradient: a target network's output, an exponential moving
average, a metric. So inside ``no_grad`` every floating result traced is a ``tensor.stop_gradient`` (no run-time cost:
it is its operand on every backend). Outside a trace, in eager mode (``runtime/eager.py``), results made inside
``no_grad`` keep no chain to their operands, so ``backward()`` does not reach through them and nothing is held for it,
as in PyTorch's evaluation loops.

```python
def loss_fn(logits, y):
    with kiln.no_grad():
        weights = F.softmax(logits, dim=-1)    # a constant to the gradient, as in PyTorch
    return (F.cross_entropy(logits, y, reduction="none") * weights.amax(-1)).mean()
```
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from kiln.frontend.trace import TraceContext


class no_grad:  # noqa: N801  (PyTorch's name)
    """Results traced inside carry no gradient; nested uses and decorated functions restore the previous mode."""

    def __init__(self) -> None:
        self._saved: list[tuple[TraceContext, bool]] = []

    def __enter__(self) -> "no_grad":
        self._saved.append(_switched(False))  # outside a trace, the eager context: eager results then carry no gradient
        return self

    def __exit__(self, *exception: Any) -> None:
        _restore(self._saved.pop())

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        return _within(no_grad, function)


class set_grad_enabled:  # noqa: N801  (PyTorch's name)
    """``torch.set_grad_enabled(mode)``: sets the mode when called (a function) and restores the previous one when
    used as a context manager or a decorator. ``False`` is ``no_grad``, in a trace and eagerly."""

    def __init__(self, mode: bool) -> None:
        self._previous = is_grad_enabled()
        self._mode = bool(mode)
        _set_mode(self._mode)

    def __enter__(self) -> "set_grad_enabled":
        return self

    def __exit__(self, *exception: Any) -> None:
        _set_mode(self._previous)

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        _set_mode(self._previous)  # as a decorator the mode applies only while the function runs
        mode = self._mode
        return _within(lambda: set_grad_enabled(mode), function)


class enable_grad(no_grad):  # noqa: N801  (PyTorch's name)
    """``torch.enable_grad()``: results traced inside carry gradients again, inside a ``no_grad`` too."""

    def __new__(cls, function: Callable[..., Any] | None = None) -> Any:
        """``@kiln.enable_grad`` without parentheses decorates ``function`` at once, as PyTorch's."""
        instance = super().__new__(cls)
        if function is None:
            return instance
        instance.__init__()
        return instance(function)

    def __init__(self, function: Callable[..., Any] | None = None) -> None:
        super().__init__()

    def __enter__(self) -> "enable_grad":
        self._saved.append(_switched(True))
        return self

    def __exit__(self, *exception: Any) -> None:
        _restore(self._saved.pop())

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        return _within(enable_grad, function)


class inference_mode(no_grad):  # noqa: N801  (PyTorch's name)
    """``torch.inference_mode(mode=True)``: ``no_grad`` (a compiled program has no autograd bookkeeping to skip);
    ``inference_mode(False)`` turns gradients back on, as PyTorch's does, inside a ``no_grad`` too. Leaving a block
    restores the enclosing block's modes."""

    def __new__(cls, mode: Any = True) -> Any:
        """``@kiln.inference_mode`` without parentheses decorates the function at once, as PyTorch's."""
        instance = super().__new__(cls)
        if not callable(mode):
            return instance
        instance.__init__()
        return instance(mode)

    def __init__(self, mode: Any = True) -> None:
        super().__init__()
        self._mode = True if callable(mode) else bool(mode)
        self._enclosing: list[bool] = []

    def __enter__(self) -> "inference_mode":
        self._saved.append(_switched(not self._mode))  # PyTorch's: gradients on exactly when inference mode is off
        self._enclosing.append(_inference[0])
        _inference[0] = self._mode
        return self

    def __exit__(self, *exception: Any) -> None:
        _restore(self._saved.pop())
        _inference[0] = self._enclosing.pop()  # the enclosing block's mode, as nested blocks and decorators need

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        mode = self._mode
        return _within(lambda: inference_mode(mode), function)


_inference = [False]
"""Whether an ``inference_mode`` block is open (a list: module state)."""


def is_grad_enabled() -> bool:
    """Whether results made now carry gradients: in a trace, the trace's mode; outside one, the eager context's."""
    return TraceContext.current().grad_enabled


def is_inference_mode_enabled() -> bool:
    return _inference[0]


def _within(mode: Callable[[], Any], function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` decorated: each call runs inside a fresh ``mode()`` context (so calls nest and recurse)."""

    @functools.wraps(function)
    def decorated(*args: Any, **kwargs: Any) -> Any:
        with mode():
            return function(*args, **kwargs)

    return decorated


def _set_mode(mode: bool) -> None:
    TraceContext.current().grad_enabled = mode


def _switched(mode: bool) -> tuple[TraceContext, bool]:
    """Set the mode, returning what restores the previous one."""
    context = TraceContext.current()
    saved = (context, context.grad_enabled)
    context.grad_enabled = mode
    return saved


def _restore(saved: tuple[TraceContext, bool]) -> None:
    context, mode = saved
    context.grad_enabled = mode


__all__ = ["enable_grad", "inference_mode", "is_grad_enabled", "is_inference_mode_enabled", "no_grad", "set_grad_enabled"]
