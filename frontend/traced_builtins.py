"""Python's ``max`` and ``min`` over traced scalars, as the eager Python computes them.

```python
rms = exp_avg_sq.pow(2).mean().sqrt()      # a traced 0-d tensor
lr = max(eps, rms) * relative_step_size    # transformers' Adafactor: Python's builtin max
```

Python's ``max(a, b)`` asks ``b > a``, whose truth a trace does not have (the values exist only when the graph runs).
While a trace runs (``frontend/trace.py``), ``max``/``min`` given traced one-element tensors among numbers compute
Python's answer in the graph: ``where(item > best, item, best)`` over the items in order, so that a later item
replaces the best only where it compares strictly greater (smaller for ``min``), NaN and ties included, as eager
Python picks. ``torch.compile`` rewrites these builtins too. Any other call (a ``key``, several elements, no traced
tensor, a counter's ``DynamicInt``, whose comparisons are guarded) is the builtin's.
"""

from __future__ import annotations

import builtins
import contextlib
import operator
from typing import Any, Callable, Iterator

from kiln.frontend.dynamic_ints import DynamicInt
from kiln.frontend.eager_values import eager_array
from kiln.frontend.tensor import Tensor

_BUILTIN_MAX, _BUILTIN_MIN = builtins.max, builtins.min


def _traced_extreme(builtin: Callable[..., Any], replaces: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    def extreme(*args: Any, **kwargs: Any) -> Any:
        if kwargs or not args:
            return builtin(*args, **kwargs)
        items = args if len(args) > 1 else args[0] if isinstance(args[0], (list, tuple)) else None
        if items is None or not _any_traced_scalar(items):
            return builtin(*args, **kwargs)
        best = items[0]
        for item in items[1:]:
            replaced = replaces(item, best)  # a bool between two numbers, a traced bool otherwise
            best = (item if replaced else best) if isinstance(replaced, bool) else _where(replaced, item, best)
        return best

    extreme.__name__, extreme.__doc__ = builtin.__name__, builtin.__doc__
    return extreme


def _any_traced_scalar(items: Any) -> bool:
    """Whether ``items`` hold a traced one-element tensor (no counter) and otherwise numbers or such tensors."""
    traced = False
    for item in items:
        if isinstance(item, Tensor):
            if item.numel() != 1:
                return False
            traced = traced or (eager_array(item) is None and not isinstance(item, DynamicInt))
        elif not isinstance(item, (int, float)):
            return False
    return traced


def _where(condition: Tensor, item: Any, best: Any) -> Tensor:
    from kiln.frontend.torch_functions import where  # lazily: the functions build on the tensor

    return where(condition, item, best)


_TRACED = {"max": _traced_extreme(_BUILTIN_MAX, operator.gt), "min": _traced_extreme(_BUILTIN_MIN, operator.lt)}


@contextlib.contextmanager
def traced_builtin_extremes() -> Iterator[None]:
    """``builtins.max``/``min`` that trace over traced scalars while the block runs (restored after, nested too)."""
    saved = builtins.max, builtins.min
    builtins.max, builtins.min = _TRACED["max"], _TRACED["min"]
    try:
        yield
    finally:
        builtins.max, builtins.min = saved


__all__ = ["traced_builtin_extremes"]
