"""Porting probe, resume: a PyTorch run's checkpoint (``torch.save`` of model, optimizer and scheduler state_dicts)
continues in kiln (``kiln.load``, ``load_state_dict``) exactly as the PyTorch run continues: torch.optim's layout
(int keys, a per-parameter ``step``) loads, and each parameter's own step count is kept (a head first trained late)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

RNG = np.random.default_rng(0)
X, Y = RNG.standard_normal((8, 5)), RNG.integers(0, 3, 8)

OPTIMIZERS = {
    "Adam": ("Adam", {}), "AdamW": ("AdamW", {"weight_decay": 0.1}), "SGD momentum": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "RMSprop": ("RMSprop", {"alpha": 0.9}), "NAdam": ("NAdam", {}), "Adam amsgrad": ("Adam", {"amsgrad": True}),
}


def _build(lib, name):
    nn = lib.nn
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    head = nn.Linear(6, 2)
    with lib.no_grad():
        for i, p in enumerate([*model.parameters(), *head.parameters()]):
            p.copy_(lib.tensor(np.cos(np.arange(p.numel()) * 0.7 + i).reshape(tuple(p.shape))))
    algorithm, options = OPTIMIZERS[name]
    optimizer = getattr(lib.optim, algorithm)([*model.parameters(), *head.parameters()], lr=0.05, **options)
    return model, head, optimizer, lib.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6)


def _train(lib, model, head, optimizer, scheduler, steps, losses):
    F = lib.nn.functional
    for _ in range(steps):
        hidden = model[:3](lib.tensor(X))
        loss = F.cross_entropy(model[3](hidden), lib.tensor(Y))
        if len(losses) >= 4:  # the second head trains only from the fifth step: its own step count starts there
            loss = loss + head(hidden).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_pytorch_checkpoint_resumes_in_kiln_as_in_pytorch(name, tmp_path, float64_default):
    torch = require_torch()
    model, head, optimizer, scheduler = _build(torch, name)
    straight = []
    _train(torch, model, head, optimizer, scheduler, 7, straight)
    expected = [p.detach().numpy() for p in [*model.parameters(), *head.parameters()]]

    model, head, optimizer, scheduler = _build(torch, name)
    resumed = []
    _train(torch, model, head, optimizer, scheduler, 5, resumed)
    torch.save({"model": model.state_dict(), "head": head.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}, tmp_path / "torch.pt")

    model, head, optimizer, scheduler = _build(kiln, name)
    checkpoint = kiln.load(tmp_path / "torch.pt")
    model.load_state_dict(checkpoint["model"])
    head.load_state_dict(checkpoint["head"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    _train(kiln, model, head, optimizer, scheduler, 2, resumed)
    np.testing.assert_allclose(resumed, straight, rtol=1e-12)
    for ours, theirs in zip([*model.parameters(), *head.parameters()], expected):
        np.testing.assert_allclose(np.asarray(ours.detach().numpy()), theirs, rtol=1e-9, atol=1e-12)
