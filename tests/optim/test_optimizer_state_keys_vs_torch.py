"""``optimizer.state`` iterated by user code gives the parameters as its keys, as torch's ``defaultdict`` keyed by
parameter: ``{names[p]: s for p, s in optimizer.state.items()}`` (reading the momentum buffers by name),
``for p in optimizer.state``, ``dict(optimizer.state)``; kiln's own code still sees its ``id(parameter)`` keys."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import torch_twins

X = np.random.default_rng(0).standard_normal((8, 3))


def _trained(lib, model, make):
    """``make(lib, params)``'s optimizer after one step on the first layer only (the last has no state)."""
    optimizer = make(lib, model.parameters())
    model[0](lib.tensor(X, dtype=lib.float32)).pow(2).mean().backward()
    optimizer.step()
    return optimizer


def _by_name(model, optimizer):
    names = {p: name for name, p in model.named_parameters()}
    return {names[p]: {key: np.asarray(value) for key, value in entry.items()} for p, entry in optimizer.state.items()}


@pytest.mark.parametrize("make", [lambda lib, p: lib.optim.Adam(p, lr=0.01),
                                  lambda lib, p: lib.optim.SGD(p, lr=0.1, momentum=0.9)], ids=["adam", "sgd"])
def test_state_keys_are_the_parameters(make):
    torch, ours, theirs = torch_twins(lambda lib: lib.nn.Sequential(lib.nn.Linear(3, 2), lib.nn.Linear(2, 1)))
    pairs = [(ours, _trained(kiln, ours, make)), (theirs, _trained(torch, theirs, make))]
    states = [_by_name(model, optimizer) for model, optimizer in pairs]
    assert sorted(states[0]) == sorted(states[1]) == ["0.bias", "0.weight"]
    for name, entry in states[1].items():
        assert sorted(states[0][name]) == sorted(entry)
        for key, value in entry.items():
            np.testing.assert_allclose(states[0][name][key], value, rtol=1e-6, atol=1e-8)
    for model, optimizer in pairs:
        assert [p is model[0].weight for p in optimizer.state] == [True, False]
        assert list(optimizer.state.keys()) == list(dict(optimizer.state)) == list(optimizer.state)
        assert all(model[0].weight is p or model[0].bias is p for p in dict(optimizer.state))


def test_kilns_own_code_keeps_the_id_keys():
    model = kiln.nn.Linear(3, 2)
    optimizer = _trained(kiln, kiln.nn.Sequential(model), lambda lib, p: lib.optim.Adam(p, lr=0.01))
    assert sorted(dict.keys(optimizer.state)) == sorted([id(model.weight), id(model.bias)])
    assert sorted(optimizer.state_dict()["state"]) == [0, 1]
