"""A kiln optimizer's ``state[p]`` entries read by user code answer as torch's state tensors: their norms, and
in-place writes (a momentum reset, a decay of Adam's moments) that the next step uses, in lockstep with torch."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import torch_twins

X = np.random.default_rng(0).standard_normal((8, 3))


def _step(lib, model, optimizer):
    optimizer.zero_grad()
    model(lib.tensor(X, dtype=lib.float32)).pow(2).mean().backward()
    optimizer.step()


@pytest.mark.parametrize("make, name", [(lambda lib, p: lib.optim.Adam(p, lr=0.01), "exp_avg"),
                                        (lambda lib, p: lib.optim.SGD(p, lr=0.1, momentum=0.9), "momentum_buffer")],
                         ids=["adam", "sgd"])
def test_state_reads_and_in_place_writes_follow_torch(make, name):
    torch, ours, theirs = torch_twins(lambda lib: lib.nn.Linear(3, 2))
    pairs = [(ours, make(kiln, ours.parameters())), (theirs, make(torch, theirs.parameters()))]
    for lib, (model, optimizer) in zip((kiln, torch), pairs):
        _step(lib, model, optimizer)
    norms = [float(optimizer.state[model.weight][name].norm()) for model, optimizer in pairs]
    np.testing.assert_allclose(norms[0], norms[1], rtol=1e-6)
    for model, optimizer in pairs:  # iterated as torch users do: every entry a tensor
        entry = optimizer.state[model.weight]
        assert all(hasattr(value, "mul_") for value in entry.values())
        assert all(hasattr(value, "norm") for _, value in entry.items())
    for lib, (model, optimizer) in zip((kiln, torch), pairs):
        optimizer.state[model.weight][name].mul_(0.5)  # written in place, read by the next step
        optimizer.state[model.bias][name].zero_()
        _step(lib, model, optimizer)
    np.testing.assert_allclose(np.asarray(ours.weight.data), theirs.weight.detach().numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(ours.bias.data), theirs.bias.detach().numpy(), rtol=1e-5, atol=1e-7)
