"""``AveragedModel.update_parameters(model)`` inside a ``kiln.compile``d step: the averaging as traced tensor ops.

The eager update (``frontend/swa_utils.py``) works on the host arrays and branches on ``n_averaged`` in Python; a trace
runs the step's Python once, so here the copy's parameters are written in place under ``no_grad`` (a compiled step
writes them back at each call) and the first call's copy is picked by ``where(n_averaged == 0, ...)``, since the
count is only known when the step runs. The arithmetic is PyTorch's CPU path: ``avg_fn`` per tensor,
``multi_avg_fn`` per dtype group in place, else the running mean ``averaged + (current - averaged) / (n + 1)``.

```python
@kiln.compile
def train_step(x, y):
    ...
    optimizer.step()
    ema.update_parameters(model)   # traced: the EMA moves at every call, not once
```
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Sequence

from kiln.frontend.grad_mode import no_grad
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext

if TYPE_CHECKING:
    from kiln.frontend.module import Module
    from kiln.frontend.swa_utils import AveragedModel


def tracing() -> bool:
    """Whether a trace (a ``kiln.compile``d function being traced) is running."""
    return TraceContext.active()


def update_traced(averaged_model: "AveragedModel", model: "Module") -> None:
    """``averaged_model.update_parameters(model)`` recorded in the trace (see the module docstring)."""
    mine, theirs = _pairs(averaged_model, model)
    count = averaged_model.n_averaged
    with no_grad():
        first = count == 0
        updated = _averaged(averaged_model, mine, theirs, count)
        for target, current, new in zip(mine, theirs, updated):
            target.copy_(current.where(first, new))  # torch.where(first, current, new)
        if not averaged_model.use_buffers:
            for target, current in zip(averaged_model.module.buffers(), model.buffers(), strict=True):
                target.copy_(current)
        count.add_(1)


def _pairs(averaged_model: "AveragedModel", model: "Module") -> tuple[list[Any], list[Any]]:
    """The copy's tensors (the parameters themselves: their in-place writes are what the step writes back) and
    ``model``'s, paired in order as PyTorch zips them."""
    mine: Any = averaged_model.module.parameters()
    theirs: Any = model.parameters()
    if averaged_model.use_buffers:
        mine, theirs = itertools.chain(mine, averaged_model.module.buffers()), itertools.chain(theirs, model.buffers())
    pairs = list(zip(mine, theirs))
    return [p for p, _ in pairs], [q.detach() for _, q in pairs]


def _averaged(averaged_model: "AveragedModel", mine: list[Any], theirs: list[Any], count: Any) -> list[Any]:
    """The averaged values past the first call: ``avg_fn``'s results, or ``mine`` after ``multi_avg_fn`` (per dtype)
    or the running mean wrote them in place."""
    if averaged_model.avg_fn is not None:
        return [averaged_model.avg_fn(target, current, count) for target, current in zip(mine, theirs)]
    if averaged_model.multi_avg_fn is None:
        return [target + (current - target) / (count + 1) for target, current in zip(mine, theirs)]
    groups: dict[Any, tuple[list[Any], list[Any]]] = {}
    for target, current in zip(mine, theirs):
        group = groups.setdefault(target.dtype, ([], []))
        group[0].append(target)
        group[1].append(current)
    for targets, currents in groups.values():
        averaged_model.multi_avg_fn(targets, currents, count)
    return mine


def ema_update_traced(ema_list: Sequence[Tensor], current_list: Sequence[Tensor], decay: float) -> None:
    """``get_ema_multi_avg_fn``'s update on traced tensors: PyTorch's ``_foreach_lerp_(ema, current, 1 - decay)`` for
    floats, ``ema.copy_(ema * decay + current * (1 - decay))`` otherwise."""
    for ema, current in zip(ema_list, current_list):
        if ema.is_floating_point() or ema.is_complex():
            ema.lerp_(current, 1 - decay)
        else:
            ema.copy_(ema * decay + current * (1 - decay))


def swa_update_traced(averaged_list: Sequence[Tensor], current_list: Sequence[Tensor], count: Any) -> None:
    """``get_swa_multi_avg_fn``'s update on traced tensors: ``_foreach_lerp_(avg, current, 1 / (n + 1))`` for floats
    (the weight a 0-d tensor in the default dtype), ``avg + (current - avg) / (n + 1)`` written back otherwise."""
    for averaged, current in zip(averaged_list, current_list):
        if averaged.is_floating_point() or averaged.is_complex():
            averaged.lerp_(current, 1 / (count + 1))
        else:
            averaged.copy_(averaged + (current - averaged) / (count + 1))


__all__ = ["ema_update_traced", "swa_update_traced", "tracing", "update_traced"]
