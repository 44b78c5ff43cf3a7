"""The ``LRScheduler`` base class: ``base_lrs`` from each group's ``initial_lr``, ``last_epoch`` counting ``step()`` calls.

A subclass writes ``get_lr`` (PyTorch's chainable, recursive form, so the same floats), and where PyTorch has one a
``_closed_form_lr`` for an explicit epoch. The families: ``schedules_decay.py`` (step, exponential, cosine,
polynomial, on plateau), ``schedules_cyclic.py`` (one-cycle, cyclic), ``schedules_composite.py`` (sequential, chained).
"""

from __future__ import annotations

import functools
import warnings
import weakref
from typing import Any, Sequence

from kiln.compiler.errors import KilnError
from kiln.frontend.optim import Optimizer
from kiln.frontend.trace import refuse_in_step


STEP_BEFORE_OPTIMIZER = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. In PyTorch 1.1.0 and later, you should call them "
    "in the opposite order: `optimizer.step()` before `lr_scheduler.step()`.  Failure to do this will result in PyTorch "
    "skipping the first value of the learning rate schedule. See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate")
"""torch's warning at the first ``scheduler.step()`` when the optimizer has not stepped (a GradScaler that skipped its
first step on inf gradients gives it too, as torch's)."""

EPOCH_DEPRECATION = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being deprecated where possible. Please use "
    "`scheduler.step()` to step the scheduler. During the deprecation, if epoch is different from None, the closed form "
    "is used instead of the new chainable form, where available. Please open an issue if you are unable to replicate "
    "your use case: https://github.com/pytorch/pytorch/issues/new/choose.")
"""torch's warning at ``scheduler.step(epoch)``."""


class LRScheduler:
    """Base class: ``base_lrs`` from each group's ``initial_lr``, ``last_epoch`` counting ``step()`` calls."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise KilnError(f"{type(self).__name__} needs a kiln optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        _track_step_called(optimizer)
        for index, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KilnError(
                    f"param_groups[{index}] has no 'initial_lr' to resume from last_epoch={last_epoch}; load the optimizer's state first"
                )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        self.step()
        self._is_initial = False

    def get_lr(self) -> list[float]:
        """The learning rates after this step, from the current ones (PyTorch's chainable form)."""
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """The next learning rates; ``step(epoch)``, deprecated in PyTorch and still taken (Transformer-XL's train.py
        writes ``scheduler.step(train_step)``), jumps to ``epoch`` by the closed form where there is one."""
        refuse_in_step("scheduler.step()", "call it after the compiled step, outside it (the learning rate is an input of the step)")
        if self._step_count == 1 and not _optimizer_stepped(self.optimizer):
            warnings.warn(STEP_BEFORE_OPTIMIZER, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self._lrs_within_step(self.get_lr)
        else:
            self.last_epoch = epoch
            values = self._lrs_within_step(self._closed_form_lr if hasattr(self, "_closed_form_lr") else self.get_lr)
        self._set_lrs(values)

    def _lrs_within_step(self, compute: Any) -> list[float]:
        """``compute()`` with ``_get_lr_called_within_step`` set, as PyTorch's ``_enable_get_lr_call`` (so the flag is
        in ``state_dict()``, as torch's)."""
        self._get_lr_called_within_step = True
        try:
            return compute()
        finally:
            self._get_lr_called_within_step = False

    def _set_lrs(self, values: Sequence[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = self._lrs()

    def _lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self._last_lr

    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer (plain numbers and lists: ``kiln.save`` writes it)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _track_step_called(optimizer: Optimizer) -> None:
    """Wrap the optimizer's ``step`` (on the instance, once) to note ``optimizer._opt_called``, as torch's
    ``LRScheduler`` does: a user's subclass overriding ``step`` is seen too."""
    if getattr(optimizer.step, "_wrapped_by_lr_sched", False):
        return
    owner, function = weakref.ref(optimizer), type(optimizer).step

    @functools.wraps(function)
    def step(*args: Any, **kwargs: Any) -> Any:
        stepped = owner()
        stepped._opt_called = True
        return function(stepped, *args, **kwargs)

    step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    optimizer.step = step  # type: ignore[method-assign]


def _optimizer_stepped(optimizer: Optimizer) -> bool:
    """Whether ``optimizer.step()`` was called since the scheduler wrapped it, or the optimizer has updated (a compiled
    step traced before the scheduler existed calls no Python ``step``, but counts its updates)."""
    return bool(getattr(optimizer, "_opt_called", False) or getattr(optimizer, "step_count", 0))


def _per_group(name: str, optimizer: Optimizer, value: float | Sequence[float]) -> list[float]:
    """One value per parameter group: a scalar repeated, or a list of exactly that many."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise KilnError(f"{name}: expected {len(optimizer.param_groups)} values (one per group), got {len(value)}")
        return list(value)
    return [value] * len(optimizer.param_groups)
