"""``kiln.no_grad()``: PyTorch's ``torch.no_grad`` for traced code, as a context manager or a decorator.

kiln has no eager autograd: gradients exist only inside a compiled step (or ``kiln.grad``), where autodiff runs over
the traced graph. What ``torch.no_grad`` means there is that the values computed inside it are constants to the
gradient: a target network's output, an exponential moving average, a metric. So inside ``no_grad`` every floating
result traced is a ``tensor.stop_gradient`` (no run-time cost: it is its operand on every backend). Outside a trace,
``no_grad`` does nothing, so evaluation loops written for PyTorch run as they are.

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
        context = TraceContext.current()  # outside a trace, the eager context: eager results then carry no gradient
        self._saved.append((context, context.grad_enabled))
        context.grad_enabled = False
        return self

    def __exit__(self, *exception: Any) -> None:
        context, enabled = self._saved.pop()
        context.grad_enabled = enabled

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def without_gradients(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return function(*args, **kwargs)

        return without_gradients


__all__ = ["no_grad"]
