"""The values a trained parameter held before in-place writes outside autograd in a trace, which still give it its
gradient.

PyTorch's parameter is one tensor: a write under ``no_grad`` (TransE's ``emb.weight.data[:-1].div_(norms)``,
``nn.Embedding(max_norm=1)``'s renormalisation before each lookup) changes its values, not its identity, so a
``backward()`` gives ``.grad`` the gradient of every read, before the write and after. A trace rebinds the
parameter to the written value instead; differentiating by that value alone dropped the reads before the write
(TransE with ``max_norm`` looks the entity table up four times a step, each lookup renormalizing first: three of
the four gradients were lost, silently). ``backward()`` now differentiates by each value the parameter held in the
trace and sums them:

```
%w.0 = input                                 param.grad = d loss / d %w.0      (reads before the write)
%a   = take(%w.0, %i)                                   + d loss / d %w.1      (reads after it)
%w.1 = index_copy(%w.0, %i, stop_gradient(...))      written under no_grad: no path from %w.1 back to %w.0
%b   = take(%w.1, %j)
```

The write is outside autograd (its value a ``tensor.stop_gradient``; an optimizer's update is a non-differentiable
op), so the derivatives count each read once.
"""

from __future__ import annotations

import weakref
from typing import Any

from kiln.compiler.ir.core import Value

_REPLACED: "weakref.WeakKeyDictionary[Any, dict[int, list[Value]]]" = weakref.WeakKeyDictionary()
"""Per trace: ``id(parameter)`` -> the values it held before each in-place write (an optimizer's update too)."""


def record_replaced(context: Any, parameter: Any) -> None:
    """``parameter``'s value in ``context`` now, about to be replaced by an in-place write outside autograd."""
    _REPLACED.setdefault(context, {}).setdefault(id(parameter), []).append(context.current_value_of(parameter))


def values_held(context: Any, parameter: Any) -> list[Value]:
    """Every value ``parameter`` held in ``context``, the current one first: a ``backward()`` differentiates by each
    and sums (a loss kept from before ``optimizer.step()`` and backpropagated after it reaches the value before)."""
    return [context.current_value_of(parameter), *_REPLACED.get(context, {}).get(id(parameter), ())]


__all__ = ["record_replaced", "values_held"]
