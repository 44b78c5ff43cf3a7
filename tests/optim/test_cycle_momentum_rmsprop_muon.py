"""OneCycleLR and CyclicLR with ``cycle_momentum=True`` on RMSprop and Muon (which have a ``momentum`` option, so torch
2.13 cycles it) and on LBFGS (which has neither ``momentum`` nor ``betas``: a ValueError), against torch in lockstep:
every step the groups' lr and momentum are torch's floats and the float64 parameters torch's to 1e-12; compiled (once)
and eager. Muon's oracle is torch's own Muon with its bfloat16 Newton-Schulz cast made a float64 copy (as
tests/optim/test_muon.py does): kiln iterates in the parameter's dtype."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from oracles import require_torch

STEPS = 24

OPTIMIZERS = {
    "RMSprop": ("RMSprop", dict(lr=1e-2, momentum=0.5)),
    "RMSprop_no_momentum": ("RMSprop", dict(lr=1e-2)),  # torch cycles it too: set to max_momentum, a buffer made
    "RMSprop_centered_wd": ("RMSprop", dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=0.01, alpha=0.9)),
    "Muon": ("Muon", dict(lr=0.05)),
    "Muon_plain_momentum": ("Muon", dict(lr=0.05, nesterov=False, weight_decay=0.01)),
}

SCHEDULES = {
    "one_cycle_cos": lambda s, o: s.OneCycleLR(o, max_lr=0.05, total_steps=STEPS),
    "cyclic_exp_range": lambda s, o: s.CyclicLR(o, base_lr=0.005, max_lr=0.05, step_size_up=3, step_size_down=4,
                                                mode="exp_range", gamma=0.97, base_momentum=0.45, max_momentum=0.95),
}


@pytest.fixture
def torch():
    torch = require_torch()
    before, original_bfloat16 = torch.get_default_dtype(), torch.Tensor.bfloat16
    torch.set_default_dtype(torch.float64)
    torch.Tensor.bfloat16 = lambda self, *args, **kwargs: self.clone()  # Muon's Newton-Schulz in float64, as kiln's
    yield torch
    torch.Tensor.bfloat16 = original_bfloat16
    torch.set_default_dtype(before)


def _mlp(lib, bias):
    return lib.nn.Sequential(lib.nn.Linear(5, 8, bias=bias), lib.nn.Tanh(), lib.nn.Linear(8, 3, bias=bias))


def _pair(torch, name):
    kind, arguments = OPTIMIZERS[name]
    kiln.manual_seed(0)
    model = _mlp(kiln, bias=kind != "Muon")
    for parameter in model.parameters():
        parameter.data = parameter.data.astype(np.float64)
    twin = _mlp(torch, bias=kind != "Muon").double()
    for p, q in zip(model.parameters(), twin.parameters()):
        q.data = torch.tensor(np.array(p.data))
    extra = {} if kind == "Muon" else {"foreach": False}
    return (model, getattr(kiln.optim, kind)(model.parameters(), **arguments),
            twin, getattr(torch.optim, kind)(twin.parameters(), **arguments, **extra))


def _groups(optimizer):
    return [(group["lr"], group["momentum"]) for group in optimizer.param_groups]


def _lockstep(torch, name, schedule, compiled):
    model, optimizer, twin, torch_optimizer = _pair(torch, name)
    rng = np.random.default_rng(1)
    data = [(rng.standard_normal((6, 5)), rng.integers(0, 3, 6)) for _ in range(STEPS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when its scheduler steps before its optimizer did
        ours, theirs = SCHEDULES[schedule](kiln.optim.lr_scheduler, optimizer), SCHEDULES[schedule](torch.optim.lr_scheduler, torch_optimizer)
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer) if compiled else None
    momenta = set()
    for index, (x, y) in enumerate(data):
        assert _groups(optimizer) == _groups(torch_optimizer), f"step {index}"
        momenta.add(optimizer.param_groups[0]["momentum"])
        if compiled:
            step(x, y)
        else:
            optimizer.zero_grad()
            F.cross_entropy(model(kiln.tensor(x)), kiln.tensor(y)).backward()
            optimizer.step()
        torch_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y)).backward()
        torch_optimizer.step()
        for (key, p), q in zip(model.named_parameters(), twin.parameters()):
            np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=f"step {index}: {key}")
        if index < STEPS - 1:
            ours.step()
            theirs.step()
    assert len(momenta) >= 5  # the momentum did cycle
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(optimizer.state_of(p)["momentum_buffer"], torch_optimizer.state[q]["momentum_buffer"].numpy(),
                                   rtol=1e-12, atol=1e-12)
    return step


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_compiled_step_cycles_the_momentum_as_torch_and_compiles_once(torch, name, schedule):
    step = _lockstep(torch, name, schedule, compiled=True)
    assert step.compile_count == 1


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_an_eager_step_cycles_the_momentum_as_torch(torch, name):
    _lockstep(torch, name, "one_cycle_cos", compiled=False)


@pytest.mark.parametrize("which", ["OneCycleLR", "CyclicLR"])
def test_lbfgs_is_refused_with_torchs_value_error(torch, which):
    make = {
        "OneCycleLR": lambda s, o: s.OneCycleLR(o, max_lr=0.1, total_steps=10),
        "CyclicLR": lambda s, o: s.CyclicLR(o, base_lr=0.01, max_lr=0.1),
    }[which]
    with pytest.raises(ValueError, match="must support momentum or beta1") as theirs:
        make(torch.optim.lr_scheduler, torch.optim.LBFGS(torch.nn.Linear(2, 1).parameters()))
    with pytest.raises(ValueError, match="must support momentum or beta1") as ours:
        make(kiln.optim.lr_scheduler, kiln.optim.LBFGS(kiln.nn.Linear(2, 1).parameters()))
    assert str(theirs.value) in str(ours.value) and "cycle_momentum=False" in str(ours.value)
    assert isinstance(ours.value, kiln.KilnError)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("options", [dict(momentum=0.9), dict(centered=True, weight_decay=0.01)], ids=["momentum", "centered"])
def test_half_rmsprop_with_a_cycled_momentum_matches_torch_bit_for_bit(torch, dtype, options):
    """The written-out RMSprop update keeps torch's half arithmetic: the fed momentum read in float32 as torch reads
    its Python float; parameters and states agree bit for bit (``test_half_optim``'s check)."""
    from test_half_optim import half_pair, step_both_and_compare

    torch.set_default_dtype(torch.float32)
    rng = np.random.default_rng(0)
    ours, theirs = half_pair(torch, dtype, rng)
    options = dict(lr=1e-2, eps=1e-4, **options)
    optimizer, reference = kiln.optim.RMSprop(ours, **options), torch.optim.RMSprop(theirs, foreach=False, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schedule = kiln.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=10)
        torch_schedule = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.05, total_steps=10)
        for index in range(8):
            step_both_and_compare(torch, optimizer, reference, ours, theirs, dtype, rng, index, "RMSprop")
            assert _groups(optimizer) == _groups(reference)
            schedule.step()
            torch_schedule.step()
    assert "momentum_buffer" in reference.state[theirs[0]] and "momentum_buffer" in optimizer.state_of(ours[0])
