"""BatchNorm2d/3d with PyTorch 2.13's whole signature (``track_running_stats``, ``bias``) and repr, as ``print(netG)``
in dcgan/main.py shows it: values, gradients and state_dicts against torch in float64, eagerly and compiled."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require_torch

TIGHT = dict(rtol=1e-10, atol=1e-12)
CASES = [
    ("BatchNorm2d", dict(track_running_stats=False), (4, 3, 2, 2)),
    ("BatchNorm2d", dict(bias=False), (4, 3, 2, 2)),
    ("BatchNorm2d", dict(affine=False, track_running_stats=False), (4, 3, 2, 2)),
    ("BatchNorm3d", dict(track_running_stats=False, momentum=0.3), (2, 3, 2, 2, 2)),
    ("BatchNorm1d", dict(bias=False), (5, 3)),
]
IDS = ["2d-no-stats", "2d-no-bias", "2d-bare", "3d-no-stats", "1d-no-bias"]


def _twins(torch, name, options):
    ours, theirs = getattr(nn, name)(3, **options).double(), getattr(torch.nn, name)(3, **options).double()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.tensor(rng.normal(1.0, 0.3, size=p.shape)))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("name,options,shape", CASES, ids=IDS)
def test_batch_norm_options_match_torch_in_train_and_eval(name, options, shape):
    torch = require_torch()
    ours, theirs = _twins(torch, name, options)
    assert repr(ours) == repr(theirs)
    x = np.random.default_rng(1).normal(2.0, 3.0, size=shape)
    weights = np.random.default_rng(2).normal(size=shape)
    for train in (True, False):
        ours.train(train), theirs.train(train)
        our_x, their_x = kiln.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        out, torch_out = ours(our_x), theirs(their_x)
        (out * weights).sum().backward()
        (torch_out * torch.tensor(weights)).sum().backward()
        np.testing.assert_allclose(np.asarray(out), torch_out.detach().numpy(), **TIGHT)
        np.testing.assert_allclose(our_x.grad, their_x.grad.numpy(), **TIGHT)
        for (key, p), q in zip(ours.named_parameters(), theirs.parameters()):
            np.testing.assert_allclose(p.grad, q.grad.numpy(), **TIGHT, err_msg=key)
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(np.asarray(ours.state_dict()[key]), value.numpy(), **TIGHT, err_msg=key)


@pytest.mark.parametrize("name,options,shape", CASES[:2], ids=IDS[:2])
def test_compiled_steps_with_the_options_match_torch(name, options, shape):
    torch = require_torch()
    ours, theirs = _twins(torch, name, options)
    model, twin = nn.Sequential(nn.Conv2d(3, 3, 1).double(), ours), torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1).double(), theirs)
    model[0].load_state_dict({k: v.detach().numpy() for k, v in twin[0].state_dict().items()})
    step = kiln.compile_train_step(model, lambda out, y: ((out - y) ** 2).mean(), kiln.optim.SGD(model.parameters(), lr=0.1))
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    rng = np.random.default_rng(3)
    for _ in range(3):
        x, y = rng.normal(size=shape), rng.normal(size=shape)
        optimizer.zero_grad()
        loss = ((twin(torch.tensor(x)) - torch.tensor(y)) ** 2).mean()
        loss.backward()
        optimizer.step()
        assert float(step(x, y)) == pytest.approx(loss.item(), rel=1e-10)
    for key, value in twin.state_dict().items():
        np.testing.assert_allclose(np.asarray(model.state_dict()[key]), value.numpy(), **TIGHT, err_msg=key)


def test_an_array_fed_eagerly_to_a_norm_without_affine_parameters():
    torch = require_torch()
    x = np.random.default_rng(4).normal(size=(4, 3, 2, 2))
    for ours, theirs in ((nn.BatchNorm2d(3, affine=False).double(), torch.nn.BatchNorm2d(3, affine=False).double()),
                         (nn.LayerNorm((2, 2), elementwise_affine=False), torch.nn.LayerNorm((2, 2), elementwise_affine=False))):
        np.testing.assert_allclose(np.asarray(ours(x)), theirs(torch.tensor(x)).numpy(), **TIGHT)
