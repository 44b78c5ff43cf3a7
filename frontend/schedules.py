"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s names, arguments and arithmetic.

A scheduler writes ``optimizer.param_groups[i]["lr"]`` on the host, exactly
as PyTorch's does (the same recursive formulas, so the same floats); the
compiled step reads the learning rate as a graph input, so a schedule never
recompiles. Call ``scheduler.step()`` after each ``step(x, y)``, as in PyTorch.

```python
optimizer = kiln.optim.SGD(model.parameters(), lr=0.1)
scheduler = kiln.optim.lr_scheduler.warmup_cosine(optimizer, warmup_steps=10, total_steps=200)
for x, y in batches:
    loss = step(x, y)
    scheduler.step()
```
"""

from __future__ import annotations

import math
import types
from collections import Counter
from functools import partial
from typing import Any, Callable, Iterable, Sequence, SupportsFloat

from kiln.compiler.errors import KilnError
from kiln.frontend.optim import Optimizer


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


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``: any Python function of the step number (one per group, or one for all)."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]], last_epoch: int = -1):
        lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * len(optimizer.param_groups)
        if len(lambdas) != len(optimizer.param_groups):
            raise KilnError(f"{type(self).__name__}: expected {len(optimizer.param_groups)} lr_lambdas (one per group), got {len(lambdas)}")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base_lr * function(self.last_epoch) for function, base_lr in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self) -> dict[str, Any]:
        # functions are code, not state: only callable objects' attributes are saved, as in PyTorch
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [None if isinstance(f, types.FunctionType) else dict(f.__dict__) for f in self.lr_lambdas]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for function, saved in zip(self.lr_lambdas, state.pop("lr_lambdas")):
            if saved is not None:
                function.__dict__.update(saved)
        self.__dict__.update(state)


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` steps."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]

    def _closed_form_lr(self) -> list[float]:
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each milestone (twice at a milestone listed twice)."""

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1, last_epoch: int = -1):
        self.milestones = dict(Counter(milestones))
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return self._lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._lrs()]

    def _closed_form_lr(self) -> list[float]:
        passed = sum(count for milestone, count in self.milestones.items() if milestone <= self.last_epoch)
        return [base_lr * self.gamma**passed for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    """Multiply the lr by ``factor`` for the first ``total_iters`` steps, then restore it."""

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1):
        if not 0 <= factor <= 1:
            raise KilnError(f"ConstantLR: factor must be in [0, 1], got {factor}")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [lr * self.factor for lr in self._lrs()]
        if self.last_epoch != self.total_iters:
            return self._lrs()
        return [lr * (1.0 / self.factor) for lr in self._lrs()]

    def _closed_form_lr(self) -> list[float]:
        return [base_lr * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor)) for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """Move the lr factor linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` steps (warm-up or decay)."""

    def __init__(
        self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1
    ):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise KilnError(f"LinearLR: need 0 < start_factor <= 1 and 0 <= end_factor <= 1, got {start_factor} and {end_factor}")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self._lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._lrs()
        change = self.end_factor - self.start_factor
        ratio = 1.0 + change / (self.total_iters * self.start_factor + (self.last_epoch - 1) * change)
        return [lr * ratio for lr in self._lrs()]

    def _closed_form_lr(self) -> list[float]:
        progress = (self.end_factor - self.start_factor) * min(self.total_iters, self.last_epoch) / self.total_iters
        return [base_lr * (self.start_factor + progress) for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every step."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]

    def _closed_form_lr(self) -> list[float]:
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine from the base lr down to ``eta_min`` over ``T_max`` steps (and back up, periodically, after)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self._lrs()
        if self._step_count == 1 and self.last_epoch > 0:
            return self._closed_form_lr()
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            bump = (1 - math.cos(math.pi / self.T_max)) / 2
            return [lr + (base_lr - self.eta_min) * bump for lr, base_lr in zip(self._lrs(), self.base_lrs)]
        ratio = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
        return [ratio * (lr - self.eta_min) + self.eta_min for lr in self._lrs()]

    def _closed_form_lr(self) -> list[float]:
        cosine = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        return [self.eta_min + (base_lr - self.eta_min) * cosine / 2 for base_lr in self.base_lrs]


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


class MultiplicativeLR(LambdaLR):
    """``lr = lr * lr_lambda(epoch)`` each step: any Python function of the step number gives the factor (one per group, or one for all)."""

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self._lrs()
        return [group["lr"] * function(self.last_epoch) for function, group in zip(self.lr_lambdas, self.optimizer.param_groups)]


class PolynomialLR(LRScheduler):
    """``lr = base_lr * (1 - epoch / total_iters) ** power`` for ``total_iters`` steps, then constant."""

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1):
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial or self.last_epoch > self.total_iters:
            return self._lrs()
        decay = ((1.0 - self.last_epoch / self.total_iters) / (1.0 - (self.last_epoch - 1) / self.total_iters)) ** self.power
        return [lr * decay for lr in self._lrs()]

    def _closed_form_lr(self) -> list[float]:
        return [base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine from the base lr to ``eta_min`` over ``T_0`` steps, then restart, each period ``T_mult`` times longer.

    ``step()`` advances one step; ``step(epoch)`` jumps to ``epoch``, which may be
    fractional (``epoch + batch / batches_per_epoch``), as in PyTorch.
    """

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0, last_epoch: int = -1):
        if not isinstance(T_0, int) or T_0 <= 0:
            raise KilnError(f"CosineAnnealingWarmRestarts: T_0 must be a positive integer, got {T_0!r}")
        if not isinstance(T_mult, int) or T_mult < 1:
            raise KilnError(f"CosineAnnealingWarmRestarts: T_mult must be an integer >= 1, got {T_mult!r}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        cosine = 1 + math.cos(math.pi * self.T_cur / self.T_i)
        return [self.eta_min + (base_lr - self.eta_min) * cosine / 2 for base_lr in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:
        self._step_count += 1
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise KilnError(f"CosineAnnealingWarmRestarts: expected a non-negative epoch, got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult**n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = self._lrs()


def _per_group(name: str, optimizer: Optimizer, value: float | Sequence[float]) -> list[float]:
    """One value per parameter group: a scalar repeated, or a list of exactly that many."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise KilnError(f"{name}: expected {len(optimizer.param_groups)} values (one per group), got {len(value)}")
        return list(value)
    return [value] * len(optimizer.param_groups)


def _start_cycling_momentum(
    name: str, optimizer: Optimizer, base_momentum: float | Sequence[float], max_momentum: float | Sequence[float], last_epoch: int
) -> tuple[bool, list[float], list[float]]:
    """PyTorch's momentum set-up: ``(use_beta1, base_momentums, max_momentums)``; from a fresh start each group's
    momentum (``betas[0]`` for an optimizer with ``betas``) is set to its max. The optimizer feeds the cycled value to
    its compiled step as a graph input from now on (``feed_as_input``), so cycling it never recompiles."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise KilnError(
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
        # (end step, start key, end key) per phase, as PyTorch's _schedule_phases; the momentum's keys in _momentum_phases
        if three_phase:
            self._schedule_phases = [
                (float(pct_start * self.total_steps) - 1, "initial_lr", "max_lr"),
                (float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr"),
                (self.total_steps - 1, "initial_lr", "min_lr"),
            ]
            self._momentum_phases = [("max_momentum", "base_momentum"), ("base_momentum", "max_momentum"), ("max_momentum", "max_momentum")]
        else:
            self._schedule_phases = [
                (float(pct_start * self.total_steps) - 1, "initial_lr", "max_lr"),
                (self.total_steps - 1, "max_lr", "min_lr"),
            ]
            self._momentum_phases = [("max_momentum", "base_momentum"), ("base_momentum", "max_momentum")]
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
            raise KilnError(f"OneCycleLR: stepped {step} times, past total_steps={self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for index, (end_step, start_key, end_key) in enumerate(self._schedule_phases):
                if step <= end_step or index == len(self._schedule_phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[start_key], group[end_key], pct))
                    if self.cycle_momentum:
                        start_momentum, end_momentum = self._momentum_phases[index]
                        _set_momentum(group, self.use_beta1, self._anneal(group[start_momentum], group[end_momentum], pct))
                    break
                start_step = end_step
        return lrs


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


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` once the metric given to ``step(metric)`` stops improving for ``patience`` steps.

    The metric may be a Python number or a kiln lazy scalar (the loss a
    compiled step returns): ``float()`` reads it.
    """

    def __init__(
        self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
        threshold_mode: str = "rel", cooldown: int = 0, min_lr: float | Sequence[float] = 0, eps: float = 1e-8,
    ):
        if factor >= 1.0:
            raise KilnError(f"ReduceLROnPlateau: factor must be < 1.0, got {factor}")
        if not isinstance(optimizer, Optimizer):
            raise KilnError(f"ReduceLROnPlateau needs a kiln optimizer, got {type(optimizer).__name__}")
        self.factor = factor
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group("ReduceLROnPlateau min_lr", optimizer, min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = self._lrs()
        self._init_is_better(mode, threshold, threshold_mode)
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: SupportsFloat) -> None:  # type: ignore[override]
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._lrs()

    def _reduce_lr(self) -> None:
        if len(self.optimizer.param_groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise KilnError(
                    f"ReduceLROnPlateau: the optimizer has {len(self.optimizer.param_groups)} param groups but min_lr lists {len(self.min_lrs)}"
                )
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in ("min", "max"):
            raise KilnError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise KilnError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)


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


__all__ = [
    "ChainedScheduler", "ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR", "ExponentialLR", "LRScheduler",
    "LambdaLR", "LinearLR", "MultiStepLR", "MultiplicativeLR", "OneCycleLR", "PolynomialLR", "ReduceLROnPlateau", "SequentialLR",
    "StepLR", "warmup_cosine",
]
