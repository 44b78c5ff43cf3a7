"""Cyclic learning-rate schedules (``OneCycleLR``, ``CyclicLR``), which may cycle the momentum too.

A cycled momentum (``momentum``, or ``betas[0]``) is fed to the compiled step as a graph input
(``Optimizer.feed_as_input``), so cycling it never recompiles.
"""

from __future__ import annotations

import math
import types
from functools import partial
from typing import Any, Callable, Sequence

from kiln.compiler.errors import KilnError
from kiln.frontend.optim import Optimizer
from kiln.frontend.schedules_base import LRScheduler, _per_group


class NoMomentumError(KilnError, ValueError):
    """``cycle_momentum=True`` on an optimizer with neither ``momentum`` nor ``betas`` (LBFGS, Adagrad...): a
    ``ValueError``, as PyTorch's."""


def _start_cycling_momentum(
    name: str, optimizer: Optimizer, base_momentum: float | Sequence[float], max_momentum: float | Sequence[float], last_epoch: int
) -> tuple[bool, list[float], list[float]]:
    """PyTorch's momentum set-up: ``(use_beta1, base_momentums, max_momentums)``; from a fresh start each group's
    momentum (``betas[0]`` for an optimizer with ``betas``) is set to its max. The optimizer feeds the cycled value to
    its compiled step as a graph input from now on (``feed_as_input``), so cycling it never recompiles."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise NoMomentumError(
            f"{name}: optimizer must support momentum or beta1 with `cycle_momentum` option enabled "
            f"({type(optimizer).__name__} has neither 'momentum' nor 'betas'); pass cycle_momentum=False"
        )
    use_beta1 = "betas" in optimizer.defaults
    base_momentums = _per_group(f"{name} base_momentum", optimizer, base_momentum)
    max_momentums = _per_group(f"{name} max_momentum", optimizer, max_momentum)
    optimizer.feed_as_input("beta1" if use_beta1 else "momentum")  # checked before any group is written
    if last_epoch == -1:
        for top, bottom, group in zip(max_momentums, base_momentums, optimizer.param_groups):
            _set_momentum(group, use_beta1, top)
            group["max_momentum"], group["base_momentum"] = top, bottom
    return use_beta1, base_momentums, max_momentums


def _set_momentum(group: dict[str, Any], use_beta1: bool, momentum: float) -> None:
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


class OneCycleLR(LRScheduler):
    """The 1cycle policy: the lr rises from ``max_lr / div_factor`` to ``max_lr``, then anneals far below the start.

    Over ``total_steps`` (or ``epochs * steps_per_epoch``) steps: up for
    ``pct_start`` of them, then down to ``initial_lr / final_div_factor``
    (``three_phase``: down to the initial lr symmetrically, then to the minimum).
    Call ``step()`` after every batch. With ``cycle_momentum`` (the default) the
    momentum (``betas[0]`` of Adam-like optimizers) moves inversely, from
    ``max_momentum`` down to ``base_momentum`` and back; the optimizer then feeds
    it to the compiled step as a graph input, so it never recompiles.
    """

    def __init__(
        self, optimizer: Optimizer, max_lr: float | Sequence[float], total_steps: int | None = None, epochs: int | None = None,
        steps_per_epoch: int | None = None, pct_start: float = 0.3, anneal_strategy: str = "cos", cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.85, max_momentum: float | Sequence[float] = 0.95, div_factor: float = 25.0,
        final_div_factor: float = 1e4, three_phase: bool = False, last_epoch: int = -1,
    ):
        if not isinstance(optimizer, Optimizer):
            raise KilnError(f"OneCycleLR needs a kiln optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if total_steps is not None:
            if not isinstance(total_steps, int) or total_steps <= 0:
                raise KilnError(f"OneCycleLR: total_steps must be a positive integer, got {total_steps!r}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0 or not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise KilnError(f"OneCycleLR: epochs and steps_per_epoch must be positive integers, got {epochs!r} and {steps_per_epoch!r}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise KilnError("OneCycleLR: give total_steps, or both epochs and steps_per_epoch")
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise KilnError(f"OneCycleLR: pct_start must be a float in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise KilnError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self._schedule_phases = _one_cycle_phases(pct_start, self.total_steps, three_phase)  # PyTorch's, as state_dict has it
        self._anneal_func_type = anneal_strategy
        self.cycle_momentum = cycle_momentum
        max_lrs = _per_group("OneCycleLR max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for group, top in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = top / div_factor
                group["max_lr"] = top
                group["min_lr"] = group["initial_lr"] / final_div_factor
        if cycle_momentum:
            self.use_beta1 = _start_cycling_momentum("OneCycleLR", optimizer, base_momentum, max_momentum, last_epoch)[0]
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise OneCyclePastTotalStepsError(f"Tried to step {step} times. The specified number of total steps is {self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for index, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or index == len(self._schedule_phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                        _set_momentum(group, self.use_beta1, momentum)
                    break
                start_step = end_step
        return lrs


class OneCyclePastTotalStepsError(KilnError, ValueError):
    """``OneCycleLR.step()`` past ``total_steps``: a ``ValueError`` with PyTorch's words."""


def _one_cycle_phases(pct_start: float, total_steps: int, three_phase: bool) -> list[dict[str, Any]]:
    """PyTorch's ``_schedule_phases``: each phase's last step and the group keys its lr and momentum go between."""
    def phase(end_step: float, start_lr: str, end_lr: str, start_momentum: str, end_momentum: str) -> dict[str, Any]:
        return {"end_step": end_step, "start_lr": start_lr, "end_lr": end_lr, "start_momentum": start_momentum,
                "end_momentum": end_momentum}

    rise = phase(float(pct_start * total_steps) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum")
    if not three_phase:
        return [rise, phase(total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
    return [rise, phase(float(2 * pct_start * total_steps) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
            phase(total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]


class CyclicLR(LRScheduler):
    """Cycle the lr between ``base_lr`` and ``max_lr`` (triangular, triangular2, exp_range, or a custom ``scale_fn``).

    Call ``step()`` after every batch. With ``cycle_momentum`` (the default) the
    momentum (``betas[0]`` of Adam-like optimizers) cycles inversely between
    ``max_momentum`` and ``base_momentum``, fed to the compiled step as a graph
    input, so it never recompiles.
    """

    def __init__(
        self, optimizer: Optimizer, base_lr: float | Sequence[float], max_lr: float | Sequence[float], step_size_up: int = 2000,
        step_size_down: int | None = None, mode: str = "triangular", gamma: float = 1.0, scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle", cycle_momentum: bool = True, base_momentum: float | Sequence[float] = 0.8,
        max_momentum: float | Sequence[float] = 0.9, last_epoch: int = -1,
    ):
        if not isinstance(optimizer, Optimizer):
            raise KilnError(f"CyclicLR needs a kiln optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        base_lrs = _per_group("CyclicLR base_lr", optimizer, base_lr)
        self.max_lrs = _per_group("CyclicLR max_lr", optimizer, max_lr)
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise KilnError(f"CyclicLR: mode must be 'triangular', 'triangular2' or 'exp_range' (or give scale_fn), got {mode!r}")
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                group["lr"] = lr
        step_size_up = float(step_size_up)
        step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
        self.total_size = step_size_up + step_size_down
        self.step_ratio = step_size_up / self.total_size
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1, self.base_momentums, self.max_momentums = _start_cycling_momentum(
                "CyclicLR", optimizer, base_momentum, max_momentum, last_epoch
            )
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref = _triangular_scale
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = _triangular2_scale
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            self._scale_fn_ref = partial(_exp_range_scale, self.gamma)
            self.scale_mode = "iterations"

    def scale_fn(self, x: float) -> float:
        return self._scale_fn_custom(x) if self._scale_fn_custom is not None else self._scale_fn_ref(x)

    def get_lr(self) -> list[float]:
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        scale_factor = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle) if self.scale_mode == "cycle" else self.scale_fn(self.last_epoch)
        if self.cycle_momentum:
            for group, bottom, top in zip(self.optimizer.param_groups, self.base_momentums, self.max_momentums):
                _set_momentum(group, self.use_beta1, top - (top - bottom) * scale_factor * scale)
        return [base_lr + (max_lr - base_lr) * scale_factor * scale for base_lr, max_lr in zip(self.base_lrs, self.max_lrs)]

    def state_dict(self) -> dict[str, Any]:
        # the scale function is code: only a callable object's attributes are saved, as in PyTorch
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "_scale_fn_ref", "_scale_fn_custom")}
        custom = self._scale_fn_custom
        state["_scale_fn_custom"] = None if custom is None or isinstance(custom, types.FunctionType) else dict(custom.__dict__)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        saved = state.pop("_scale_fn_custom", None)
        self.__dict__.update(state)
        if saved is not None:
            self._scale_fn_custom.__dict__.update(saved)
        self._init_scale_fn()


def _triangular_scale(x: float) -> float:
    return 1.0


def _triangular2_scale(x: float) -> float:
    return 1 / (2.0 ** (x - 1))


def _exp_range_scale(gamma: float, x: float) -> float:
    return gamma**x
