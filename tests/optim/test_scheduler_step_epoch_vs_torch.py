"""``scheduler.step(epoch)``: PyTorch's deprecated epoch argument, which Transformer-XL's train.py passes after its
warmup (``scheduler.step(train_step)`` on a ``CosineAnnealingLR``). torch sets ``last_epoch`` to it and takes the
closed form where the scheduler has one (the chainable form otherwise), with a deprecation warning; kiln's
``LRScheduler.step`` took no argument (a TypeError)."""

from __future__ import annotations

import warnings

import pytest

import kiln
from oracles import require_torch

SCHEDULERS = {
    "CosineAnnealingLR": lambda lr_scheduler, optimizer: lr_scheduler.CosineAnnealingLR(optimizer, 6, eta_min=1e-4),
    "StepLR": lambda lr_scheduler, optimizer: lr_scheduler.StepLR(optimizer, 2, gamma=0.5),
    "ExponentialLR": lambda lr_scheduler, optimizer: lr_scheduler.ExponentialLR(optimizer, 0.9),
    "LambdaLR (no closed form)": lambda lr_scheduler, optimizer: lr_scheduler.LambdaLR(optimizer,
                                                                                       lambda e: 1 / (e + 1)),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_step_with_an_epoch_as_torch(name):
    """train.py's loop: a linear warmup written into ``param_groups[0]['lr']``, then ``step(train_step)``."""
    torch = require_torch()
    records = []
    for lib in (kiln, torch):
        optimizer = lib.optim.Adam([lib.nn.Parameter(lib.zeros(2))], lr=5e-3)
        scheduler = SCHEDULERS[name](lib.optim.lr_scheduler, optimizer)
        lrs, caught = [], []
        for train_step in range(1, 9):
            optimizer.step()
            with warnings.catch_warnings(record=True) as now:
                warnings.simplefilter("always")
                if train_step < 3:
                    optimizer.param_groups[0]["lr"] = 5e-3 * train_step / 3
                else:
                    scheduler.step(train_step)
            caught += [str(w.message) for w in now]
            lrs.append(optimizer.param_groups[0]["lr"])
        records.append((lrs, scheduler.last_epoch, scheduler._step_count, scheduler.get_last_lr(), caught))
    assert records[0] == records[1]
    assert len(records[0][-1]) == 6 and records[0][-1][0].startswith("The epoch parameter in `scheduler.step()`")


def test_step_without_an_epoch_gives_no_warning():
    optimizer = kiln.optim.SGD([kiln.nn.Parameter(kiln.zeros(2))], lr=0.1)
    scheduler = kiln.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)
    optimizer.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.05
