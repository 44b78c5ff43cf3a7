"""``torch.optim.swa_utils``: weight averaging (SWA), an exponential moving average of the weights (EMA), ``update_bn``.

``AveragedModel(model)`` keeps a deep copy of ``model`` whose parameters (and, with ``use_buffers=True``, buffers)
``update_parameters(model)`` averages in place on the host, after each ``optimizer.step()`` or compiled
``step(x, y)`` (both leave the new values in ``model``'s parameters). The first call copies; later calls apply the
running mean (SWA, the default), or ``avg_fn(averaged, current, n_averaged)`` per tensor, or
``multi_avg_fn(averaged_list, current_list, n_averaged)`` in place per dtype, with PyTorch's arithmetic. The copy is a
``Module``: ``ema(x)`` runs it eagerly, ``kiln.compile(ema)`` compiles it, and ``state_dict()`` has PyTorch's keys
(``n_averaged``, ``module.*``), so a torch checkpoint loads.

```python
ema = kiln.optim.swa_utils.AveragedModel(model, multi_avg_fn=kiln.optim.swa_utils.get_ema_multi_avg_fn(0.999), use_buffers=True)
for x, y in batches:
    loss = step(x, y)
    ema.update_parameters(model)
predictions = kiln.compile(ema.eval())(x_test)
```
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from kiln.compiler.ir.types import is_float_array_dtype
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.batch_norm_base import _BatchNorm
from kiln.frontend.module import ArrayLeaf, Module, Parameter
from kiln.frontend.optim import Optimizer
from kiln.frontend.schedules import LRScheduler, _per_group
from kiln.frontend.swa_traced import ema_update_traced, swa_update_traced, tracing, update_traced
from kiln.frontend.tensor import eager_tensor
from kiln.frontend.torch_dtypes import get_default_dtype

AvgFn = Callable[[Any, Any, Any], Any]
"""``avg_fn(averaged, current, n_averaged) -> new averaged`` for one tensor."""
MultiAvgFn = Callable[[Sequence[Parameter], Sequence[Parameter], Any], None]
"""``multi_avg_fn(averaged, current, n_averaged)`` writing the averaged tensors of one dtype in place."""


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    """In place, ``ema <- decay ema + (1 - decay) current``: PyTorch's ``_foreach_lerp_(ema, current, 1 - decay)`` for
    floats; integer buffers (``num_batches_tracked``) in the default float dtype, truncated back, as PyTorch's."""
    _check_decay(decay)

    def ema_update(ema_list: Sequence[Parameter], current_list: Sequence[Parameter], _: Any) -> None:
        if tracing():  # in a kiln.compile'd step: tensor ops (frontend/swa_traced.py)
            return ema_update_traced(ema_list, current_list, decay)
        if _is_floating(ema_list[0]):
            for ema, current in zip(ema_list, current_list):
                _lerp_into(_array(ema), _array(current), 1 - decay)
        else:
            compute = get_default_dtype().numpy.type  # torch: a long tensor times a Python float is in the default dtype
            for ema, current in zip(ema_list, current_list):
                _write(ema, _array(ema).astype(compute) * compute(decay) + _array(current).astype(compute) * compute(1 - decay))

    return ema_update


def get_swa_multi_avg_fn() -> MultiAvgFn:
    """In place, the running mean ``avg <- avg + (current - avg) / (n + 1)``: for floats PyTorch's
    ``_foreach_lerp_(avg, current, 1 / (n + 1))`` with its weight computed in the default dtype (float32: PyTorch's
    ``1 / (n_averaged + 1)`` is a float32 tensor, so a float64 average moves by that rounded weight)."""

    def swa_update(averaged_list: Sequence[Parameter], current_list: Sequence[Parameter], num_averaged: Any) -> None:
        if tracing():
            return swa_update_traced(averaged_list, current_list, num_averaged)
        count = int(np.asarray(num_averaged))
        if _is_floating(averaged_list[0]):
            one = get_default_dtype().numpy.type(1)
            weight = float(one / (one + count)) if not isinstance(num_averaged, int) else 1.0 / (count + 1)
            for averaged, current in zip(averaged_list, current_list):
                _lerp_into(_array(averaged), _array(current), weight)
        else:
            for averaged, current in zip(averaged_list, current_list):
                _write(averaged, _running_mean(_array(averaged), _array(current), count))

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    """``decay * ema + (1 - decay) * current`` for one tensor (kiln tensors, parameters or arrays)."""
    _check_decay(decay)

    def ema_update(ema: Any, current: Any, num_averaged: Any) -> Any:
        return decay * ema + (1 - decay) * current

    return ema_update


def get_swa_avg_fn() -> AvgFn:
    """``averaged + (current - averaged) / (num_averaged + 1)`` for one tensor: the running mean."""

    def swa_update(averaged: Any, current: Any, num_averaged: Any) -> Any:
        return averaged + (current - averaged) / (num_averaged + 1)

    return swa_update


class AveragedModel(Module):
    """PyTorch's ``AveragedModel``: a deep copy of ``model`` (``self.module``) and the count ``n_averaged`` (an int64
    buffer), averaged by ``update_parameters``. ``device`` is accepted and passed to ``Module.to``, which ignores devices
    (the backend a model is compiled for holds its arrays). Give ``avg_fn`` or ``multi_avg_fn``, not both."""

    def __init__(self, model: Module, device: Any = None, avg_fn: AvgFn | None = None, multi_avg_fn: MultiAvgFn | None = None,
                 use_buffers: bool = False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise ValueError("AveragedModel: give avg_fn (one tensor at a time) or multi_avg_fn (lists, in place), not both")
        if not isinstance(model, Module):
            raise TypeError(f"AveragedModel averages a kiln Module, got {type(model).__name__}")
        self.module = copy.deepcopy(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", np.zeros((), np.int64))
        self.avg_fn, self.multi_avg_fn, self.use_buffers = avg_fn, multi_avg_fn, use_buffers

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def update_parameters(self, model: Module) -> None:
        """Average ``model``'s current parameters (and buffers, with ``use_buffers``) into the copy; without
        ``use_buffers`` the copy's buffers are set to ``model``'s. The first call copies. In a ``kiln.compile``d step
        the update is traced (``frontend/swa_traced.py``), so it happens at every call."""
        if tracing():
            return update_traced(self, model)
        averaged, current = self._averaged_pairs(model)
        count = int(self.n_averaged.data)
        if count == 0:
            for mine, theirs in zip(averaged, current):
                _write(mine, theirs.data)
        elif self.avg_fn is not None:
            for mine, theirs in zip(averaged, current):
                _write(mine, self.avg_fn(mine, theirs, eager_tensor(np.asarray(count, np.int64))))
        else:
            self._average_by_dtype(averaged, current, count)
        if not self.use_buffers:
            for mine, theirs in zip(self.module.buffers(), model.buffers(), strict=True):
                _write(mine, theirs.data)
        self.n_averaged.data[...] = count + 1

    def _averaged_pairs(self, model: Module) -> tuple[list[Parameter], list[Parameter]]:
        """The copy's tensors and ``model``'s, detached (sharing their arrays), paired in order as PyTorch zips them."""
        mine: Iterable[Parameter] = self.module.parameters()
        theirs: Iterable[Parameter] = model.parameters()
        if self.use_buffers:
            mine, theirs = itertools.chain(mine, self.module.buffers()), itertools.chain(theirs, model.buffers())
        pairs = list(zip(mine, theirs))
        return [p.detach() for p, _ in pairs], [q.detach() for _, q in pairs]

    def _average_by_dtype(self, averaged: list[Parameter], current: list[Parameter], count: int) -> None:
        """``multi_avg_fn`` once per dtype group, as PyTorch groups by device and dtype; without one, the running mean
        per tensor (PyTorch's CPU path, ``get_swa_avg_fn``'s arithmetic)."""
        if self.multi_avg_fn is None:
            for mine, theirs in zip(averaged, current):
                _write(mine, _running_mean(_array(mine), _array(theirs), count))
            return
        groups: dict[np.dtype, tuple[list[Parameter], list[Parameter]]] = {}
        for mine, theirs in zip(averaged, current):
            group = groups.setdefault(mine.data.dtype, ([], []))
            group[0].append(mine)
            group[1].append(theirs)
        for mine_group, their_group in groups.values():
            self.multi_avg_fn(mine_group, their_group, eager_tensor(np.asarray(count, np.int64)))


def update_bn(loader: Iterable[Any], model: Module, device: Any = None) -> None:
    """Recompute every BatchNorm's running statistics in one pass over ``loader`` (batches, or tuples whose first item is
    the batch): reset, then a cumulative average over the batches (``momentum=None``: batch ``k`` weighs ``1/k``), in
    training mode under ``no_grad``; each momentum and the training mode are restored afterwards, as PyTorch's."""
    norms = [module for module in model.modules() if isinstance(module, _BatchNorm)]
    if not norms:
        return
    momenta = {norm: norm.momentum for norm in norms}
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    was_training = model.training
    model.train()
    try:
        with no_grad():
            for batch in loader:
                model(_first_input(batch, device))
    finally:
        for norm, momentum in momenta.items():
            norm.momentum = momentum
        model.train(was_training)


def _first_input(batch: Any, device: Any) -> Any:
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return batch.to(device) if device is not None and hasattr(batch, "to") else batch


class SWALR(LRScheduler):
    """PyTorch's ``SWALR``: anneal each group's lr to ``swa_lr`` (one value, or one per group) over ``anneal_epochs``
    steps, by ``"cos"`` or ``"linear"``, then hold it; PyTorch's recursive formula, so the same floats."""

    def __init__(self, optimizer: Optimizer, swa_lr: float | Sequence[float], anneal_epochs: int = 10, anneal_strategy: str = "cos",
                 last_epoch: int = -1):
        for value, group in zip(_per_group("SWALR swa_lr", optimizer, swa_lr), optimizer.param_groups):
            group["swa_lr"] = value
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"SWALR: anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy!r}")
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"SWALR: anneal_epochs must be an int equal or greater than 0, got {anneal_epochs!r}")
        self._set_anneal_func(anneal_strategy)
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = _cosine_anneal if anneal_strategy == "cos" else _linear_anneal

    def get_lr(self) -> list[float]:
        # the lr before annealing, recovered from the current one, then moved to this step's point: PyTorch's arithmetic
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        previous_alpha = self.anneal_func(max(0, min(1, (step - 1) / max(1, self.anneal_epochs))))
        alpha = self.anneal_func(max(0, min(1, step / max(1, self.anneal_epochs))))
        groups = self.optimizer.param_groups
        initial = [_initial_lr(group["lr"], group["swa_lr"], previous_alpha) for group in groups]
        return [group["swa_lr"] * alpha + lr * (1 - alpha) for group, lr in zip(groups, initial)]

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._set_anneal_func(self._anneal_strategy)


def _linear_anneal(t: float) -> float:
    return t


def _cosine_anneal(t: float) -> float:
    return (1 - math.cos(math.pi * t)) / 2


def _initial_lr(lr: float, swa_lr: float, alpha: float) -> float:
    return swa_lr if alpha == 1 else (lr - alpha * swa_lr) / (1 - alpha)


def _check_decay(decay: float) -> None:
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")


def _is_floating(tensor: Any) -> bool:
    return is_float_array_dtype(_array(tensor).dtype) or np.iscomplexobj(_array(tensor))


def _array(tensor: Any) -> np.ndarray:
    """The values of a parameter (its array, brought back from a device first) or of a kiln tensor or array."""
    return np.asarray(tensor.data if isinstance(tensor, ArrayLeaf) else tensor)  # a plain ndarray: its ufuncs are fast


def _write(target: Parameter, value: Any) -> None:
    """``target.detach().copy_(value)`` as PyTorch's: in place, cast to ``target``'s dtype (a float truncated into an
    integer buffer), so the arrays a compiled model or a device step reads see it."""
    np.copyto(_array(target), _array(value), casting="unsafe")


def _lerp_into(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start <- lerp(start, end, weight)`` in place, as PyTorch's: ``start + w (end - start)`` for ``|w| < 0.5``, else
    ``end + (w - 1)(end - start)``, in float32 for half arrays (PyTorch's opmath); the multiply-add is formed in float64
    and rounded to that dtype once, as PyTorch's fused multiply-add (bit for bit in float32, float16 and bfloat16)."""
    compute = np.float32 if start.dtype.itemsize < 4 else start.dtype.type
    wide = np.subtract(end, start, dtype=compute).astype(np.complex128 if np.iscomplexobj(start) else np.float64, copy=False)
    small = abs(weight) < 0.5
    wide *= compute(weight) if small else compute(weight) - compute(1)
    wide += start if small else end
    np.copyto(start, wide.astype(compute, copy=False), casting="unsafe")


def _running_mean(averaged: np.ndarray, current: np.ndarray, count: int) -> np.ndarray:
    """``averaged + (current - averaged) / (count + 1)`` with PyTorch's dtypes: a float array keeps its dtype; an
    integer one divides in the default float dtype (PyTorch's true division), truncated when written back."""
    compute = averaged.dtype.type if is_float_array_dtype(averaged.dtype) else get_default_dtype().numpy.type
    difference = (current - averaged).astype(compute)
    return averaged.astype(compute) + difference / compute(count + 1)


__all__ = ["SWALR", "AveragedModel", "get_ema_avg_fn", "get_ema_multi_avg_fn", "get_swa_avg_fn", "get_swa_multi_avg_fn", "update_bn"]
