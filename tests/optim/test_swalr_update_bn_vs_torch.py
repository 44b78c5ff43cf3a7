"""``kiln.optim.swa_utils.SWALR`` and ``update_bn`` against ``torch.optim.swa_utils``.

SWALR: the learning rates of two parameter groups step by step, both strategies, several anneal lengths, one
``swa_lr`` or one per group, a state_dict round trip mid-anneal: the same floats as PyTorch's. update_bn: the
running statistics a pass over a loader leaves in every BatchNorm (1d and 2d), the batch count, and the momentum
and training mode it restores, as PyTorch's to 1e-12 in float64.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from kiln.optim import swa_utils
from oracles import torch_twins

STEPS = 25


def _two_group_optimizers(torch):
    ours = [kiln.nn.Parameter(np.zeros(2)) for _ in range(2)]
    theirs = [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)) for _ in range(2)]
    kiln_optimizer = kiln.optim.SGD([{"params": [ours[0]]}, {"params": [ours[1]], "lr": 0.3}], lr=0.1)
    torch_optimizer = torch.optim.SGD([{"params": [theirs[0]]}, {"params": [theirs[1]], "lr": 0.3}], lr=0.1)
    return kiln_optimizer, torch_optimizer


def _rates(optimizer):
    return [group["lr"] for group in optimizer.param_groups]


SCHEDULES = [
    dict(swa_lr=0.05),
    dict(swa_lr=0.05, anneal_strategy="linear"),
    dict(swa_lr=[0.02, 0.5], anneal_epochs=5),
    dict(swa_lr=[0.02, 0.5], anneal_epochs=5, anneal_strategy="linear"),
    dict(swa_lr=0.01, anneal_epochs=1),
    dict(swa_lr=0.01, anneal_epochs=0),
    dict(swa_lr=0.01, anneal_epochs=0, anneal_strategy="linear"),
    dict(swa_lr=0.2, anneal_epochs=30, anneal_strategy="cos"),
]


@pytest.mark.parametrize("arguments", SCHEDULES, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
def test_swalr_gives_torchs_learning_rates_step_by_step(torch, arguments):
    kiln_optimizer, torch_optimizer = _two_group_optimizers(torch)
    seen = {tuple(_rates(kiln_optimizer))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when its optimizer never stepped
        ours = swa_utils.SWALR(kiln_optimizer, **arguments)
        theirs = torch.optim.swa_utils.SWALR(torch_optimizer, **arguments)
        for index in range(STEPS):
            assert _rates(kiln_optimizer) == _rates(torch_optimizer), f"step {index}"
            assert ours.get_last_lr() == theirs.get_last_lr(), f"step {index}"
            seen.add(tuple(_rates(kiln_optimizer)))
            torch_optimizer.step()
            ours.step()
            theirs.step()
    assert [group["swa_lr"] for group in kiln_optimizer.param_groups] == [group["swa_lr"] for group in torch_optimizer.param_groups]
    assert len(seen) > 1  # the rates did move to swa_lr


def test_swalr_after_another_schedule_starts_from_the_current_rate(torch):
    """The SWA recipe: a cosine schedule first, then SWALR from wherever it left the rates."""
    kiln_optimizer, torch_optimizer = _two_group_optimizers(torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cosines = (kiln.optim.lr_scheduler.CosineAnnealingLR(kiln_optimizer, T_max=20),
                   torch.optim.lr_scheduler.CosineAnnealingLR(torch_optimizer, T_max=20))
        for _ in range(7):
            for scheduler in cosines:
                scheduler.step()
        ours = swa_utils.SWALR(kiln_optimizer, swa_lr=0.03, anneal_epochs=4)
        theirs = torch.optim.swa_utils.SWALR(torch_optimizer, swa_lr=0.03, anneal_epochs=4)
        for index in range(8):
            assert _rates(kiln_optimizer) == _rates(torch_optimizer), f"step {index}"
            ours.step()
            theirs.step()


def test_swalr_state_dict_resumes_mid_anneal(torch):
    kiln_optimizer, torch_optimizer = _two_group_optimizers(torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = swa_utils.SWALR(kiln_optimizer, swa_lr=0.05, anneal_epochs=8, anneal_strategy="linear")
        theirs = torch.optim.swa_utils.SWALR(torch_optimizer, swa_lr=0.05, anneal_epochs=8, anneal_strategy="linear")
        for _ in range(3):
            ours.step()
            theirs.step()
        state = ours.state_dict()
        assert "anneal_func" not in state and "optimizer" not in state and state["_anneal_strategy"] == "linear"
        assert {"anneal_epochs", "last_epoch", "_step_count", "base_lrs"} <= set(state) & set(theirs.state_dict())
        resumed = swa_utils.SWALR(kiln_optimizer, swa_lr=0.05, anneal_strategy="cos", last_epoch=2)
        resumed.load_state_dict(state)
        for index in range(6):
            resumed.step()
            theirs.step()
            assert _rates(kiln_optimizer) == _rates(torch_optimizer), f"step {index} after resuming"


def test_swalr_refuses_bad_arguments():
    optimizer = kiln.optim.SGD([kiln.nn.Parameter(np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="'cos' or 'linear'"):
        swa_utils.SWALR(optimizer, swa_lr=0.05, anneal_strategy="exp")
    with pytest.raises(ValueError, match="anneal_epochs"):
        swa_utils.SWALR(optimizer, swa_lr=0.05, anneal_epochs=-1)
    with pytest.raises(ValueError, match="anneal_epochs"):
        swa_utils.SWALR(optimizer, swa_lr=0.05, anneal_epochs=2.5)
    with pytest.raises(KilnError, match="one per group"):
        swa_utils.SWALR(optimizer, swa_lr=[0.05, 0.1])


def _convnet(lib):
    nn = lib.nn
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, momentum=0.3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5),
                         nn.BatchNorm1d(5), nn.Linear(5, 2)).double()


def _loader(rng, batches):
    return [(rng.normal(size=(4 + k, 2, 4, 4)) * (1 + k), rng.normal(size=(4 + k, 2))) for k in range(batches)]


def _norms(model, lib):
    return [m for m in model.modules() if isinstance(m, (lib.nn.BatchNorm1d, lib.nn.BatchNorm2d))]


@pytest.mark.parametrize("form", ["tuples_of_tensors", "tensors", "arrays", "lists"])
def test_update_bn_recomputes_running_statistics_as_torch(torch, form):
    torch_module, model, twin = torch_twins(_convnet, seed=2)
    rng = np.random.default_rng(5)
    warm = rng.normal(size=(6, 2, 4, 4))
    model(kiln.tensor(warm))  # running statistics away from their reset values, as after training
    twin(torch.tensor(warm))
    model.eval()
    twin.eval()
    batches = _loader(rng, 4)
    torch_module.optim.swa_utils.update_bn([(torch.tensor(x), torch.tensor(y)) for x, y in batches], twin)
    loaders = {
        "tuples_of_tensors": [(kiln.tensor(x), kiln.tensor(y)) for x, y in batches],
        "tensors": [kiln.tensor(x) for x, _ in batches],
        "arrays": [x for x, _ in batches],
        "lists": [list(batch) for batch in batches],
    }
    swa_utils.update_bn(loaders[form], model)
    for ours, theirs in zip(_norms(model, kiln), _norms(twin, torch), strict=True):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            np.testing.assert_allclose(getattr(ours, name).data, getattr(theirs, name).numpy(), rtol=1e-12, atol=1e-12, err_msg=name)
    assert [norm.momentum for norm in _norms(model, kiln)] == [0.3, 0.1]
    assert not model.training and not any(m.training for m in model.modules())
    assert int(_norms(model, kiln)[0].num_batches_tracked.data) == len(batches)


def test_update_bn_through_a_kiln_data_loader_on_an_averaged_model(torch):
    """``update_bn(loader, swa_model)`` at the end of SWA: a ``kiln.utils.data.DataLoader`` over (x, y) pairs."""
    torch_module, model, twin = torch_twins(_convnet, seed=4)
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(12, 2, 4, 4)), rng.normal(size=(12, 2))
    ours = swa_utils.AveragedModel(model)
    theirs = torch.optim.swa_utils.AveragedModel(twin)
    ours.train(False)
    loader = kiln.utils.data.DataLoader(kiln.utils.data.TensorDataset(kiln.tensor(x), kiln.tensor(y)), batch_size=5)
    their_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=5)
    swa_utils.update_bn(loader, ours)
    torch_module.optim.swa_utils.update_bn(their_loader, theirs)
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(np.asarray(ours.state_dict()[name]), value.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)
    assert not ours.training


def test_update_bn_leaves_a_model_without_batch_norm_alone():
    model = kiln.nn.Sequential(kiln.nn.Linear(2, 2)).eval()
    calls = []
    swa_utils.update_bn(iter(lambda: calls.append(1) or np.ones((1, 2)), None), model)  # never drawn from
    assert calls == [] and not model.training


def test_update_bn_restores_momentum_and_mode_when_the_model_fails():
    model = kiln.nn.Sequential(kiln.nn.Linear(2, 3), kiln.nn.BatchNorm1d(3, momentum=0.2))
    model.eval()
    with pytest.raises(Exception):
        swa_utils.update_bn([np.ones((2, 5))], model)  # 5 features into Linear(2, 3)
    assert model[1].momentum == 0.2 and not model.training
