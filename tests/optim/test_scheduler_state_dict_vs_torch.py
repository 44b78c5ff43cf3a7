"""Learning-rate schedulers' ``state_dict()`` equal to torch 2.13's after the same steps (every entry but the
functions: ``_get_lr_called_within_step``, OneCycleLR's ``_schedule_phases`` as torch's dicts, the ``_step_count`` that
CosineAnnealingWarmRestarts leaves at 0), a run resumed mid-way from torch's state_dict continuing as torch's, and torch's
warning when the first ``scheduler.step()`` comes before any ``optimizer.step()``."""

from __future__ import annotations

import warnings

import pytest

import kiln
from oracles import require_torch

SCHEDULERS = {
    "StepLR": lambda lib, o: lib.optim.lr_scheduler.StepLR(o, 2, gamma=0.5),
    "OneCycleLR three_phase linear": lambda lib, o: lib.optim.lr_scheduler.OneCycleLR(
        o, max_lr=1.0, total_steps=10, three_phase=True, anneal_strategy="linear"),
    "OneCycleLR cos": lambda lib, o: lib.optim.lr_scheduler.OneCycleLR(o, max_lr=[0.5], epochs=2, steps_per_epoch=5),
    "CosineAnnealingWarmRestarts": lambda lib, o: lib.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3),
    "ReduceLROnPlateau": lambda lib, o: lib.optim.lr_scheduler.ReduceLROnPlateau(
        o, mode="max", cooldown=1, min_lr=0.02, patience=0, factor=0.5),
    "LambdaLR": lambda lib, o: lib.optim.lr_scheduler.LambdaLR(o, lambda epoch: 0.9**epoch),
    "CyclicLR": lambda lib, o: lib.optim.lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=2, mode="triangular2"),
    "SequentialLR": lambda lib, o: lib.optim.lr_scheduler.SequentialLR(
        o, [lib.optim.lr_scheduler.LinearLR(o, 0.1, total_iters=2), lib.optim.lr_scheduler.ExponentialLR(o, 0.9)], milestones=[2]),
    "ChainedScheduler": lambda lib, o: lib.optim.lr_scheduler.ChainedScheduler(
        [lib.optim.lr_scheduler.ConstantLR(o, 0.5, 2), lib.optim.lr_scheduler.ExponentialLR(o, 0.9)]),
    "SWALR": lambda lib, o: lib.optim.swa_utils.SWALR(o, swa_lr=0.05, anneal_epochs=3),
}
METRICS = [1.0, 0.5, 0.5, 0.7, 0.7, 0.2, 0.9, 0.9]


def _made(lib, name):
    parameter = lib.nn.Parameter(lib.zeros(2))
    optimizer = lib.optim.SGD([parameter], lr=0.1, momentum=0.9)
    return optimizer, SCHEDULERS[name](lib, optimizer)


def _step(name, optimizer, scheduler, i):
    optimizer.step()
    if name == "ReduceLROnPlateau":
        scheduler.step(METRICS[i])
    elif name == "CosineAnnealingWarmRestarts":
        scheduler.step(i + 0.5)  # the fractional epochs of scheduler.step(epoch + i / iters)
    else:
        scheduler.step()


def _comparable(value):
    """A state_dict without its functions (lr_lambdas' lambdas, CyclicLR's scale function)."""
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items() if not callable(item)}
    if isinstance(value, (list, tuple)):
        return [_comparable(item) for item in value]
    return value


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_state_dict_as_torch(name):
    torch = require_torch()
    states = []
    for lib in (kiln, torch):
        optimizer, scheduler = _made(lib, name)
        for i in range(5):
            _step(name, optimizer, scheduler, i)
        states.append((_comparable(scheduler.state_dict()), optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]))
    assert repr(states[0]) == repr(states[1])


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_resume_from_torchs_state_dict(name):
    """kiln's scheduler and optimizer groups loaded from torch's after 4 steps (a torch checkpoint) then stepped on:
    the same learning rates and momenta as torch's run."""
    torch = require_torch()
    optimizer, scheduler = _made(torch, name)
    for i in range(4):
        _step(name, optimizer, scheduler, i)
    ours_optimizer, ours = _made(kiln, name)
    ours.load_state_dict(scheduler.state_dict())
    for ours_group, group in zip(ours_optimizer.param_groups, optimizer.param_groups):
        ours_group.update({key: value for key, value in group.items() if key != "params"})
    lrs = []
    for opt, sched in ((ours_optimizer, ours), (optimizer, scheduler)):
        for i in range(4, 8):
            _step(name, opt, sched, i)
        lrs.append((sched.get_last_lr(), opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
    assert repr(lrs[0]) == repr(lrs[1])


def _scheduler_warnings(lib, case):
    parameter = lib.nn.Parameter(lib.ones(2))
    optimizer = lib.optim.SGD([parameter], lr=0.1)
    scheduler = lib.optim.lr_scheduler.StepLR(optimizer, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case == "scheduler first":
            scheduler.step()
            optimizer.step()
        elif case == "optimizer first":
            (parameter * 2).sum().backward()
            optimizer.step()
            scheduler.step()
        elif case == "optimizer stepped without gradients":  # no update, but step() was called: no warning
            optimizer.step()
            scheduler.step()
        else:  # a GradScaler skipping the first step on inf gradients: torch warns too
            scaler = lib.amp.GradScaler("cpu")
            scaler.scale((parameter * float("inf")).sum()).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
    return [str(w.message) for w in caught if "lr_scheduler" in str(w.message)]


@pytest.mark.parametrize("case", ["scheduler first", "optimizer first", "optimizer stepped without gradients",
                                  "scaler skipped the step"])
def test_step_order_warning_as_torch(case):
    torch = require_torch()
    assert _scheduler_warnings(kiln, case) == _scheduler_warnings(torch, case)
