"""Schedules made of other schedules: ``SequentialLR`` (one after another), ``ChainedScheduler`` (all at once), and
``warmup_cosine`` (linear warm-up, then cosine decay)."""

from __future__ import annotations

from typing import Any, Sequence

from kiln.compiler.errors import KilnError
from kiln.frontend.optim import Optimizer
from kiln.frontend.schedules_base import LRScheduler
from kiln.frontend.schedules_decay import CosineAnnealingLR, LinearLR, ReduceLROnPlateau


class _ComposedScheduler(LRScheduler):
    """A scheduler made of others (``SequentialLR``, ``ChainedScheduler``): its state holds theirs."""

    _schedulers: list[LRScheduler]

    def state_dict(self) -> dict[str, Any]:
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for scheduler, saved in zip(self._schedulers, state.pop("_schedulers")):
            scheduler.load_state_dict(saved)
        self.__dict__.update(state)


class SequentialLR(_ComposedScheduler):
    """Run ``schedulers`` one after another, switching at each of ``milestones`` (warm-up, then decay)."""

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int], last_epoch: int = -1):
        if not schedulers or len(milestones) != len(schedulers) - 1:
            raise KilnError(f"SequentialLR: needs one scheduler more than milestones, got {len(schedulers)} and {len(milestones)}")
        if any(scheduler.optimizer is not optimizer for scheduler in schedulers):
            raise KilnError("SequentialLR: every scheduler must belong to the optimizer given")
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        # undo what the schedulers' own first steps did, then take the first one's first step again
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for scheduler in self._schedulers:
            _undo_step(scheduler)
        self._schedulers[0]._initial_step()
        self._last_lr = self._schedulers[0].get_last_lr()

    def step(self) -> None:
        self.last_epoch += 1
        index = sum(1 for milestone in self._milestones if milestone <= self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_ComposedScheduler):
    """Step every one of ``schedulers`` at each ``step()``, their chainable updates composing (e.g. a constant warm-up times a decay)."""

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None):
        if not schedulers:
            raise KilnError("ChainedScheduler: expects at least one scheduler")
        optimizer = optimizer or schedulers[0].optimizer
        for index, scheduler in enumerate(schedulers):
            if isinstance(scheduler, ReduceLROnPlateau):
                raise KilnError(f"ChainedScheduler: scheduler {index} is a ReduceLROnPlateau, whose step needs a metric; step it yourself")
            if scheduler.optimizer is not optimizer:
                raise KilnError(f"ChainedScheduler: scheduler {index} ({type(scheduler).__name__}) belongs to another optimizer")
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = self._lrs()

    def step(self) -> None:
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = self._lrs()


def _undo_step(scheduler: LRScheduler) -> None:
    """Step a scheduler's epoch back by one (a nested sequence: its schedulers', as PyTorch's ``recursive_undo``)."""
    if isinstance(scheduler, SequentialLR):
        for inner in scheduler._schedulers:
            _undo_step(inner)
    else:
        scheduler.last_epoch -= 1


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, total_steps: int, eta_min: float = 0.0, start_factor: float = 1e-3) -> SequentialLR:
    """Linear warm-up from ``start_factor * lr`` to ``lr`` over ``warmup_steps``, then cosine to ``eta_min`` by ``total_steps``.

    The same as ``SequentialLR([LinearLR(...), CosineAnnealingLR(...)], milestones=[warmup_steps])`` in PyTorch.
    """
    if not 0 < warmup_steps < total_steps:
        raise KilnError(f"warmup_cosine: need 0 < warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)
    decay = CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps, eta_min=eta_min)
    return SequentialLR(optimizer, [warmup, decay], milestones=[warmup_steps])
