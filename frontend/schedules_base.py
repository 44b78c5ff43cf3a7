"""The ``LRScheduler`` base class: ``base_lrs`` from each group's ``initial_lr``, ``last_epoch`` counting ``step()`` calls.

A subclass writes ``get_lr`` (PyTorch's chainable, recursive form, so the same floats), and where PyTorch has one a
``_closed_form_lr`` for an explicit epoch. The families: ``schedules_decay.py`` (step, exponential, cosine,
polynomial, on plateau), ``schedules_cyclic.py`` (one-cycle, cyclic), ``schedules_composite.py`` (sequential, chained).
"""

from __future__ import annotations

from typing import Any, Sequence

from kiln.compiler.errors import KilnError
from kiln.frontend.optim import Optimizer
from kiln.frontend.trace import refuse_in_step


class LRScheduler:
    """Base class: ``base_lrs`` from each group's ``initial_lr``, ``last_epoch`` counting ``step()`` calls."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise KilnError(f"{type(self).__name__} needs a kiln optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
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

    def step(self) -> None:
        refuse_in_step("scheduler.step()", "call it after the compiled step, outside it (the learning rate is an input of the step)")
        self._step_count += 1
        self._update_lr(None)

    def _update_lr(self, epoch: int | None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            values = self._closed_form_lr() if hasattr(self, "_closed_form_lr") else self.get_lr()
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


def _per_group(name: str, optimizer: Optimizer, value: float | Sequence[float]) -> list[float]:
    """One value per parameter group: a scalar repeated, or a list of exactly that many."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise KilnError(f"{name}: expected {len(optimizer.param_groups)} values (one per group), got {len(value)}")
        return list(value)
    return [value] * len(optimizer.param_groups)
