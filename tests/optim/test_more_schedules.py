"""The rest of ``torch.optim.lr_scheduler`` against PyTorch: the same floats, step by step, with two parameter groups.

OneCycleLR, CyclicLR, CosineAnnealingWarmRestarts (``step()`` and fractional
``step(epoch)``), PolynomialLR, MultiplicativeLR, ChainedScheduler and
ReduceLROnPlateau; state_dict round trips mid-schedule; a compiled SGD step
driven by OneCycleLR that compiles once and trains as PyTorch does.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import KilnError
from kiln.optim import lr_scheduler as schedules
from kiln.runtime.lazy import LazyScalar

STEPS = 60


class Halving:
    """A callable object (not a function) as ``scale_fn``: its attributes are state, saved and restored."""

    def __init__(self):
        self.base = 0.5

    def __call__(self, x):
        return self.base ** (x / 10)


SCHEDULES = {
    "one_cycle_cos": (lambda s, o: s.OneCycleLR(o, max_lr=1.0, total_steps=STEPS, cycle_momentum=False)),
    "one_cycle_epochs_per_group_max_lr": (
        lambda s, o: s.OneCycleLR(o, max_lr=[0.4, 2.0], epochs=7, steps_per_epoch=9, pct_start=0.25, cycle_momentum=False)
    ),
    "one_cycle_linear_three_phase": (
        lambda s, o: s.OneCycleLR(
            o, max_lr=0.8, total_steps=STEPS + 5, anneal_strategy="linear", three_phase=True, div_factor=10.0,
            final_div_factor=100.0, cycle_momentum=False,
        )
    ),
    "one_cycle_cos_three_phase": (
        lambda s, o: s.OneCycleLR(o, max_lr=[0.5, 0.9], total_steps=STEPS, pct_start=0.4, three_phase=True, cycle_momentum=False)
    ),
    "cyclic_triangular": (lambda s, o: s.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=7, cycle_momentum=False)),
    "cyclic_triangular2_asymmetric": (
        lambda s, o: s.CyclicLR(o, base_lr=[0.01, 0.02], max_lr=[0.1, 0.5], step_size_up=5, step_size_down=9, mode="triangular2",
                                cycle_momentum=False)
    ),
    "cyclic_exp_range": (
        lambda s, o: s.CyclicLR(o, base_lr=0.001, max_lr=0.3, step_size_up=4, mode="exp_range", gamma=0.97, cycle_momentum=False)
    ),
    "cyclic_custom_scale_iterations": (
        lambda s, o: s.CyclicLR(o, base_lr=0.05, max_lr=0.2, step_size_up=6, scale_fn=lambda x: 1 / (1 + x), scale_mode="iterations",
                                cycle_momentum=False)
    ),
    "cyclic_custom_scale_cycle": (
        lambda s, o: s.CyclicLR(o, base_lr=0.05, max_lr=0.2, step_size_up=3, scale_fn=Halving(), cycle_momentum=False)
    ),
    "warm_restarts": (lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=10)),
    "warm_restarts_doubling": (lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3)),
    "polynomial_quadratic": (lambda s, o: s.PolynomialLR(o, total_iters=40, power=2.0)),
    "polynomial_sqrt": (lambda s, o: s.PolynomialLR(o, total_iters=STEPS + 10, power=0.5)),
    "polynomial_default": (lambda s, o: s.PolynomialLR(o)),
    "multiplicative": (lambda s, o: s.MultiplicativeLR(o, lr_lambda=lambda epoch: 0.95)),
    "multiplicative_per_group": (
        lambda s, o: s.MultiplicativeLR(o, [lambda epoch: 0.99 if epoch % 3 else 0.7, lambda epoch: 1 / (1 + 0.01 * epoch)])
    ),
    "chained_constant_exponential": (
        lambda s, o: s.ChainedScheduler([s.ConstantLR(o, factor=0.5, total_iters=10), s.ExponentialLR(o, gamma=0.95)])
    ),
    "chained_warmup_polynomial": (
        lambda s, o: s.ChainedScheduler([s.LinearLR(o, start_factor=0.1, total_iters=8), s.PolynomialLR(o, total_iters=50, power=1.5)], o)
    ),
}


def two_group_optimizers(torch, momentum: float = 0.0):
    ours = [kiln.nn.Parameter(np.zeros(2, np.float32)) for _ in range(2)]
    theirs = [torch.nn.Parameter(torch.zeros(2)) for _ in range(2)]
    kiln_optimizer = kiln.optim.SGD([{"params": [ours[0]]}, {"params": [ours[1]], "lr": 0.3}], lr=0.1, momentum=momentum)
    torch_optimizer = torch.optim.SGD([{"params": [theirs[0]]}, {"params": [theirs[1]], "lr": 0.3}], lr=0.1, momentum=momentum)
    return kiln_optimizer, torch_optimizer


def learning_rates(optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def assert_same(ours, theirs, where):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert type(a) is float or isinstance(a, (int, float)), where
        assert a == pytest.approx(b, rel=1e-15, abs=0.0), f"{where}: {ours} != {theirs}"


@pytest.mark.parametrize("make", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_schedule_matches_torch_step_by_step(torch, make):
    kiln_optimizer, torch_optimizer = two_group_optimizers(torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when its optimizer never stepped
        ours, theirs = make(schedules, kiln_optimizer), make(torch.optim.lr_scheduler, torch_optimizer)
        seen = set()
        for index in range(STEPS):
            assert learning_rates(kiln_optimizer) == learning_rates(torch_optimizer), f"step {index}"
            assert ours.get_last_lr() == theirs.get_last_lr(), f"step {index}"
            seen.add(tuple(learning_rates(kiln_optimizer)))
            torch_optimizer.step()
            ours.step()
            theirs.step()
    assert len(seen) > 5  # the schedule did move the rates


def test_one_cycle_runs_to_its_last_step_and_refuses_more(torch):
    kiln_optimizer, torch_optimizer = two_group_optimizers(torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = schedules.OneCycleLR(kiln_optimizer, max_lr=1.0, total_steps=30, cycle_momentum=False)
        theirs = torch.optim.lr_scheduler.OneCycleLR(torch_optimizer, max_lr=1.0, total_steps=30, cycle_momentum=False)
        for _ in range(29):
            ours.step()
            theirs.step()
        assert learning_rates(kiln_optimizer) == learning_rates(torch_optimizer)
        assert learning_rates(kiln_optimizer)[0] == pytest.approx(1.0 / 25 / 1e4)  # initial_lr / final_div_factor
        ours.step()
        theirs.step()
        with pytest.raises(ValueError, match="Tried to step 31 times. The specified number of total steps is 30") as refused:
            theirs.step()
        with pytest.raises(ValueError, match=refused.value.args[0]):  # torch's words
            ours.step()


@pytest.mark.parametrize("T_0,T_mult", [(10, 1), (3, 2), (4, 3)])
def test_warm_restarts_with_fractional_epochs_matches_torch(torch, T_0, T_mult):
    kiln_optimizer, torch_optimizer = two_group_optimizers(torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = schedules.CosineAnnealingWarmRestarts(kiln_optimizer, T_0=T_0, T_mult=T_mult, eta_min=0.002)
        theirs = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(torch_optimizer, T_0=T_0, T_mult=T_mult, eta_min=0.002)
        batches = 7
        for epoch in range(12):
            for batch in range(batches):
                at = epoch + batch / batches
                ours.step(at)
                theirs.step(at)
                assert learning_rates(kiln_optimizer) == learning_rates(torch_optimizer), f"epoch {at}"
                assert ours.get_last_lr() == theirs.get_last_lr()
                assert (ours.T_cur, ours.T_i, ours.last_epoch) == (theirs.T_cur, theirs.T_i, theirs.last_epoch)
        # then plain steps continue from the last epoch, interleaved with a jump back
        for _ in range(15):
            ours.step()
            theirs.step()
            assert learning_rates(kiln_optimizer) == learning_rates(torch_optimizer)
        ours.step(2.5)
        theirs.step(2.5)
        assert learning_rates(kiln_optimizer) == learning_rates(torch_optimizer)


def plateau_metrics() -> list[float]:
    """Improvements, long plateaus, small (sub-threshold) changes and regressions: reductions, cooldowns, resets."""
    rng = np.random.default_rng(3)
    values = [10.0, 9.0, 8.5, 8.5, 8.5, 8.5, 8.49999, 8.5, 8.6, 8.7, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 6.99, 6.0]
    values += [6.0 + 0.001 * i for i in range(12)] + [5.0, 5.0, 4.0] + [4.0] * 15
    values += list(4.0 + 0.05 * rng.standard_normal(30))
    return [float(v) for v in values]


PLATEAUS = {
    "min_rel": dict(mode="min", factor=0.5, patience=2, cooldown=0),
    "min_rel_cooldown": dict(mode="min", factor=0.5, patience=1, cooldown=3),
    "min_abs_threshold": dict(mode="min", factor=0.3, patience=2, threshold=0.05, threshold_mode="abs", cooldown=2),
    "min_lr_floor_per_group": dict(mode="min", factor=0.2, patience=0, min_lr=[0.01, 0.05]),
    "min_lr_floor_scalar_big_eps": dict(mode="min", factor=0.9, patience=1, min_lr=0.02, eps=0.005),
    "max_rel": dict(mode="max", factor=0.5, patience=2, cooldown=1),
    "max_abs": dict(mode="max", factor=0.7, patience=3, threshold=0.2, threshold_mode="abs", cooldown=4),
    "defaults": dict(),
}


@pytest.mark.parametrize("options", PLATEAUS.values(), ids=PLATEAUS.keys())
def test_reduce_on_plateau_matches_torch(torch, options):
    kiln_optimizer, torch_optimizer = two_group_optimizers(torch)
    ours = schedules.ReduceLROnPlateau(kiln_optimizer, **options)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_optimizer, **options)
    metrics = plateau_metrics()
    if options.get("mode") == "max":
        metrics = [-m for m in metrics]
    reductions = 0
    for index, metric in enumerate(metrics + metrics[::-1]):
        before = learning_rates(kiln_optimizer)
        ours.step(metric)
        theirs.step(metric)
        assert learning_rates(kiln_optimizer) == learning_rates(torch_optimizer), f"step {index}"
        assert ours.get_last_lr() == theirs.get_last_lr()
        assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter, ours.last_epoch) == (
            theirs.best, theirs.num_bad_epochs, theirs.cooldown_counter, theirs.last_epoch
        )
        reductions += learning_rates(kiln_optimizer) != before
    assert reductions >= 2


def test_reduce_on_plateau_rejects_bad_options():
    optimizer = kiln.optim.SGD([kiln.nn.Parameter(np.zeros(2, np.float32))], lr=0.1)
    with pytest.raises(KilnError, match="factor"):
        schedules.ReduceLROnPlateau(optimizer, factor=1.0)
    with pytest.raises(KilnError, match="mode"):
        schedules.ReduceLROnPlateau(optimizer, mode="up")
    with pytest.raises(KilnError, match="threshold_mode"):
        schedules.ReduceLROnPlateau(optimizer, threshold_mode="ratio")
    with pytest.raises(KilnError, match="min_lr"):
        schedules.ReduceLROnPlateau(optimizer, min_lr=[0.1, 0.2])


RESUMABLE = {
    name: SCHEDULES[name]
    for name in ("one_cycle_linear_three_phase", "cyclic_triangular2_asymmetric", "cyclic_exp_range", "cyclic_custom_scale_cycle",
                 "warm_restarts_doubling", "polynomial_quadratic", "multiplicative", "chained_warmup_polynomial")
}


@pytest.mark.parametrize("make", RESUMABLE.values(), ids=RESUMABLE.keys())
def test_state_dict_round_trip_resumes_identically(torch, make):
    first, _ = two_group_optimizers(torch)
    schedule = make(schedules, first)
    for _ in range(23):
        schedule.step()
    saved_optimizer, saved_schedule = first.state_dict(), schedule.state_dict()
    assert "optimizer" not in saved_schedule
    assert not any(callable(value) and not isinstance(value, (dict, list)) for value in saved_schedule.values())
    if isinstance(schedule, schedules.CyclicLR) and schedule._scale_fn_custom is not None:
        schedule._scale_fn_custom.base = 0.25  # a callable scale_fn's attributes are state
        saved_schedule = schedule.state_dict()
    expected = []
    for _ in range(25):
        schedule.step()
        expected.append(learning_rates(first))
    second, _ = two_group_optimizers(torch)
    resumed = make(schedules, second)
    resumed.step()  # a different position: the load must replace it
    second.load_state_dict(saved_optimizer)
    resumed.load_state_dict(saved_schedule)
    for index, lrs in enumerate(expected):
        resumed.step()
        assert learning_rates(second) == lrs, f"step {index}"
        assert resumed.get_last_lr() == lrs


def test_reduce_on_plateau_state_dict_round_trip(torch):
    first, _ = two_group_optimizers(torch)
    options = dict(mode="max", factor=0.5, patience=1, cooldown=2, threshold=0.01)
    schedule = schedules.ReduceLROnPlateau(first, **options)
    metrics = [-m for m in plateau_metrics()]
    for metric in metrics[:20]:
        schedule.step(metric)
    saved_optimizer, saved_schedule = first.state_dict(), schedule.state_dict()
    expected = []
    for metric in metrics[20:]:
        schedule.step(metric)
        expected.append(learning_rates(first))
    second, _ = two_group_optimizers(torch)
    resumed = schedules.ReduceLROnPlateau(second, mode="min")  # the saved mode wins
    second.load_state_dict(saved_optimizer)
    resumed.load_state_dict(saved_schedule)
    assert resumed.mode == "max" and resumed.mode_worse == -math.inf
    for metric, lrs in zip(metrics[20:], expected):
        resumed.step(metric)
        assert learning_rates(second) == lrs
    assert len(set(map(tuple, expected))) > 1


def test_chained_scheduler_refuses_plateau_and_foreign_optimizers(torch):
    first, _ = two_group_optimizers(torch)
    second, _ = two_group_optimizers(torch)
    with pytest.raises(KilnError, match="ReduceLROnPlateau"):
        schedules.ChainedScheduler([schedules.ExponentialLR(first, 0.9), schedules.ReduceLROnPlateau(first)])
    with pytest.raises(KilnError, match="another optimizer"):
        schedules.ChainedScheduler([schedules.ExponentialLR(first, 0.9), schedules.ExponentialLR(second, 0.9)])


def small_model_pair(torch):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for name, value in model.state_dict().items():
            twin.state_dict()[name].copy_(torch.from_numpy(np.array(value, dtype=np.float32)))
    return model, twin


def test_one_cycle_drives_the_compiled_step_without_recompiling(torch):
    model, twin = small_model_pair(torch)
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1)
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer)
    schedule = schedules.OneCycleLR(optimizer, max_lr=2.0, total_steps=12, cycle_momentum=False)
    torch_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(torch_optimizer, max_lr=2.0, total_steps=12, cycle_momentum=False)
    rng = np.random.default_rng(0)
    used = []
    for index in range(12):
        x, y = rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 3, 6)
        used.append(optimizer.param_groups[0]["lr"])
        loss = step(x, y)
        torch_optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y))
        torch_loss.backward()
        torch_optimizer.step()
        assert float(loss) == pytest.approx(torch_loss.item(), rel=1e-4, abs=1e-5), f"step {index}"
        schedule.step()
        torch_schedule.step()
    assert len(set(used)) == len(used)  # a new lr every step...
    assert max(used) == pytest.approx(2.0, rel=0.05)
    assert step.compile_count == 1  # ...read as a graph input, never recompiling
    twin_state = twin.state_dict()
    for name, value in model.state_dict().items():  # and the step used each of them, as PyTorch did
        np.testing.assert_allclose(value, twin_state[name].detach().numpy(), rtol=1e-4, atol=1e-5)


def test_reduce_on_plateau_reads_the_compiled_steps_lazy_loss(torch):
    model, _ = small_model_pair(torch)
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.5)
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer)
    schedule = schedules.ReduceLROnPlateau(optimizer, factor=0.5, patience=0, threshold=0.5)
    twin_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    twin = torch.optim.lr_scheduler.ReduceLROnPlateau(twin_optimizer, factor=0.5, patience=0, threshold=0.5)
    x, y = np.ones((3, 4), np.float32), np.array([0, 1, 2])
    for _ in range(5):
        loss = step(x, y)  # a float on NumPy; asynchronous backends return a LazyScalar, read with float()
        lazy = loss if isinstance(loss, LazyScalar) else LazyScalar(np.float32(loss))
        schedule.step(lazy)
        assert lazy.ready
        twin.step(float(loss))
        assert learning_rates(optimizer) == learning_rates(twin_optimizer)
    assert optimizer.param_groups[0]["lr"] < 0.5
    assert step.compile_count == 1
