"""``torch.optim.lr_scheduler._LRScheduler``, the base class's pre-2.0 name that torch 2.13 still has (a subclass of
``LRScheduler`` adding nothing) and that user schedulers still subclass: Graphormer's ``PolynomialDecayLR`` (warmup
then polynomial decay by ``self._step_count``) failed at its definition in kiln, which had no such name."""

from __future__ import annotations

import pytest

import kiln
from oracles import require_torch


def polynomial_decay_lr(torch):
    """graphormer/lr.py's scheduler (torch 2.13's base has no ``verbose``, so it is not passed on)."""

    class PolynomialDecayLR(torch.optim.lr_scheduler._LRScheduler):
        def __init__(self, optimizer, warmup_updates, tot_updates, lr, end_lr, power, last_epoch=-1):
            self.warmup_updates, self.tot_updates, self.lr, self.end_lr, self.power = (
                warmup_updates, tot_updates, lr, end_lr, power)
            super().__init__(optimizer, last_epoch)

        def get_lr(self):
            if self._step_count <= self.warmup_updates:
                lr = self._step_count / float(self.warmup_updates) * self.lr
            elif self._step_count >= self.tot_updates:
                lr = self.end_lr
            else:
                pct_remaining = 1 - (self._step_count - self.warmup_updates) / (self.tot_updates - self.warmup_updates)
                lr = (self.lr - self.end_lr) * pct_remaining ** self.power + self.end_lr
            return [lr for group in self.optimizer.param_groups]

    return PolynomialDecayLR


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_a_legacy_base_subclass_schedules_as_torch(power):
    torch = require_torch()
    rates = []
    for lib in (kiln, torch):
        assert issubclass(lib.optim.lr_scheduler._LRScheduler, lib.optim.lr_scheduler.LRScheduler)
        assert "_LRScheduler" not in lib.optim.lr_scheduler.__all__
        optimizer = lib.optim.AdamW([lib.nn.Parameter(lib.zeros(2))], lr=1e-3)
        scheduler = polynomial_decay_lr(lib)(optimizer, warmup_updates=3, tot_updates=8, lr=2e-4, end_lr=1e-9,
                                            power=power)
        lrs = [optimizer.param_groups[0]["lr"]]
        for _ in range(10):
            optimizer.step()
            scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
        rates.append((lrs, scheduler.get_last_lr(), scheduler._step_count, scheduler.last_epoch))
    assert rates[0] == rates[1]
