"""Schedules against ``torch.optim.lr_scheduler`` over 200 steps, and a compiled step that reads them without recompiling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.optim import lr_scheduler as schedules
from oracles import require

STEPS = 200

SCHEDULES = {
    "constant_factor": (lambda s, o: s.ConstantLR(o, factor=0.25, total_iters=20)),
    "step": (lambda s, o: s.StepLR(o, step_size=30, gamma=0.5)),
    "multistep": (lambda s, o: s.MultiStepLR(o, milestones=[10, 50, 50, 120], gamma=0.3)),
    "exponential": (lambda s, o: s.ExponentialLR(o, gamma=0.97)),
    "cosine": (lambda s, o: s.CosineAnnealingLR(o, T_max=50, eta_min=1e-4)),
    "linear_warmup": (lambda s, o: s.LinearLR(o, start_factor=0.1, total_iters=30)),
    "linear_decay": (lambda s, o: s.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=STEPS)),
    "lambda": (lambda s, o: s.LambdaLR(o, lambda epoch: 1 / (1 + epoch) ** 0.5)),
    "lambda_per_group": (lambda s, o: s.LambdaLR(o, [lambda epoch: 0.99**epoch, lambda epoch: 1 / (1 + epoch)])),
    "linear_warmup_then_cosine": (
        lambda s, o: s.SequentialLR(o, [s.LinearLR(o, start_factor=1e-3, total_iters=20), s.CosineAnnealingLR(o, T_max=180, eta_min=1e-5)], milestones=[20])
    ),
    "three_phases": (
        lambda s, o: s.SequentialLR(o, [s.ConstantLR(o, factor=0.5, total_iters=10), s.ExponentialLR(o, gamma=0.9), s.StepLR(o, step_size=7)], milestones=[15, 60])
    ),
}


def two_group_optimizers(torch):
    ours = [kiln.nn.Parameter(np.zeros(2, np.float32)) for _ in range(2)]
    theirs = [torch.nn.Parameter(torch.zeros(2)) for _ in range(2)]
    kiln_optimizer = kiln.optim.SGD([{"params": [ours[0]]}, {"params": [ours[1]], "lr": 0.3}], lr=0.1)
    torch_optimizer = torch.optim.SGD([{"params": [theirs[0]]}, {"params": [theirs[1]], "lr": 0.3}], lr=0.1)
    return kiln_optimizer, torch_optimizer


def learning_rates(optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


@pytest.mark.parametrize("make", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_schedule_matches_torch_exactly_for_200_steps(torch, make):
    kiln_optimizer, torch_optimizer = two_group_optimizers(torch)
    ours, theirs = make(schedules, kiln_optimizer), make(torch.optim.lr_scheduler, torch_optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when its optimizer never stepped
        for index in range(STEPS):
            assert learning_rates(kiln_optimizer) == learning_rates(torch_optimizer), f"step {index}"
            assert ours.get_last_lr() == theirs.get_last_lr()
            torch_optimizer.step()
            ours.step()
            theirs.step()


def test_warmup_cosine_helper_is_linear_warmup_then_cosine(torch):
    kiln_optimizer, torch_optimizer = two_group_optimizers(torch)
    ours = schedules.warmup_cosine(kiln_optimizer, warmup_steps=20, total_steps=STEPS, eta_min=1e-5)
    theirs = SCHEDULES["linear_warmup_then_cosine"](torch.optim.lr_scheduler, torch_optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(STEPS):
            assert learning_rates(kiln_optimizer) == learning_rates(torch_optimizer)
            ours.step()
            theirs.step()
    assert learning_rates(kiln_optimizer)[0] == pytest.approx(1e-5, rel=1e-6)


def test_scheduler_state_dict_resumes_the_schedule():
    first, _ = two_group_optimizers(require("torch"))
    schedule = schedules.warmup_cosine(first, warmup_steps=5, total_steps=40)
    for _ in range(12):
        schedule.step()
    saved_optimizer, saved_schedule = first.state_dict(), schedule.state_dict()
    expected = []
    for _ in range(10):
        schedule.step()
        expected.append(learning_rates(first))
    second, _ = two_group_optimizers(require("torch"))
    resumed = schedules.warmup_cosine(second, warmup_steps=5, total_steps=40)
    second.load_state_dict(saved_optimizer)
    resumed.load_state_dict(saved_schedule)
    for lrs in expected:
        resumed.step()
        assert learning_rates(second) == lrs


def test_a_schedule_drives_the_compiled_step_without_recompiling():
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.5)
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer)
    schedule = schedules.StepLR(optimizer, step_size=1, gamma=0.0)  # lr 0.5 for one step, then 0
    x, y = np.ones((3, 4), np.float32), np.array([0, 1, 2])
    step(x, y)
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == 0.0
    frozen = {name: value.copy() for name, value in model.state_dict().items()}
    step(x, y)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, frozen[name])  # the new lr (0) was read, not the traced 0.5
    assert step.compile_count == 1
