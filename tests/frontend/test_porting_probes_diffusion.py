"""Porting probe, DDPM: an EMA copy of the weights updated in place under ``no_grad`` (``ema_p.lerp_(p, 1 - decay)``,
``mul_``/``add_``) as PyTorch's; every in-place method works on a parameter outside a trace, not only those with a
NumPy shortcut."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import kiln
from oracles import require_torch

WEIGHTS = np.random.default_rng(0).standard_normal((3, 4))
TARGET = np.random.default_rng(1).standard_normal((3, 4))

IN_PLACE = {
    "lerp_": lambda lib, p, q: p.lerp_(q, 0.1),
    "lerp_tensor_weight": lambda lib, p, q: p.lerp_(q, lib.full((3, 4), 0.25, dtype=lib.float64)),
    "pow_": lambda lib, p, q: p.pow_(2),
    "neg_": lambda lib, p, q: p.neg_(),
    "masked_fill_": lambda lib, p, q: p.masked_fill_(q > 0, 0.5),
    "sigmoid_": lambda lib, p, q: p.sigmoid_(),
    "exp_": lambda lib, p, q: p.exp_(),
    "addcmul_": lambda lib, p, q: p.addcmul_(q, q, value=0.5),
}


def _parameters(lib):
    return lib.nn.Parameter(lib.tensor(WEIGHTS.copy())), lib.nn.Parameter(lib.tensor(TARGET.copy()))


@pytest.mark.parametrize("name", sorted(IN_PLACE))
def test_in_place_method_on_a_parameter_under_no_grad_as_torch(name):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        p, q = _parameters(lib)
        with lib.no_grad():
            returned = IN_PLACE[name](lib, p, q)
        assert returned is p
        results.append(np.array(p.detach().numpy()))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-14, atol=1e-15)


def test_the_in_place_result_keeps_the_parameters_shape_and_says_so():
    p, _ = _parameters(kiln)
    with kiln.no_grad(), pytest.raises(Exception, match="keep the tensor's shape"):
        p.lerp_(kiln.ones(2, 3, 4, dtype=kiln.float64), 0.5)


def _ema_run(lib, steps=3):
    lib.manual_seed(0)
    model = lib.nn.Sequential(lib.nn.Linear(4, 3), lib.nn.GroupNorm(1, 3), lib.nn.SiLU(), lib.nn.Linear(3, 2)).double()
    rng = np.random.default_rng(2)
    for p in model.parameters():
        p.data = lib.tensor(rng.standard_normal(tuple(p.shape)))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = lib.optim.Adam(model.parameters(), lr=0.05)
    x, y = lib.tensor(rng.standard_normal((5, 4))), lib.tensor(rng.standard_normal((5, 2)))
    for step in range(steps):
        opt.zero_grad()
        lib.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        with lib.no_grad():
            for ema_p, p in zip(ema.parameters(), model.parameters()):
                ema_p.lerp_(p, 0.1) if step % 2 else ema_p.mul_(0.9).add_(p.detach(), alpha=0.1)
    return [np.array(p.detach().numpy()) for p in ema.parameters()], np.array(ema(x).detach().numpy())


def test_an_ema_of_the_weights_in_lockstep_with_torch():
    torch = require_torch()
    (ours, our_out), (theirs, their_out) = _ema_run(kiln), _ema_run(torch)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(our_out, their_out, rtol=1e-12, atol=1e-13)


def test_assigning_a_tensor_to_parameter_data_takes_its_values_as_torch():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        layer = lib.nn.Linear(4, 3).double()
        layer.weight.data = lib.tensor(WEIGHTS[:, :4].copy())
        layer.bias.data = lib.zeros(3, dtype=lib.float64) + 0.5
        results.append(np.array(layer(lib.tensor(TARGET)).detach().numpy()))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-13, atol=1e-14)
