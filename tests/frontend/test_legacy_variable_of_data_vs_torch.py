"""``torch.autograd.Variable`` of a parameter's ``.data`` or of a ``state_dict()`` entry, against torch 2.13: a
contractive autoencoder's ``torch.sum(Variable(W) ** 2, dim=1)`` with ``W = model.state_dict()['fc1.weight']``. kiln
keeps those as NumPy-backed ``TorchArray``s, which ``Variable`` refused ("Variable data has to be a tensor, but got
TorchArray"; "TracedData" inside ``kiln.compile``); it now takes the tensor they stand for, detached, as torch's
(``frontend/legacy_variable.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

W = np.arange(6.0).reshape(2, 3) / 10


def _penalty(name, source, compiled=False):
    torch = libraries(name)[0]
    Variable = torch.autograd.Variable
    layer = torch.nn.Linear(3, 2, bias=False)
    layer.weight.data = torch.tensor(W.copy())

    def penalty(x):
        weight = layer.state_dict()["weight"] if source == "state_dict" else layer.weight.data
        variable = Variable(weight)
        assert not variable.requires_grad
        return (layer(x) * torch.sum(Variable(weight) ** 2, dim=1)).sum()

    run = kiln.compile(penalty, fullgraph=True) if compiled else penalty
    out = run(torch.tensor(np.ones((4, 3))))
    out.backward()
    return out.item(), np.array(layer.weight.grad.numpy())


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("source", ["state_dict", "data"])
def test_variable_of_a_parameters_data_is_its_detached_tensor(source, compiled, float64_default):
    ours, theirs = _penalty("kiln", source, compiled), _penalty("torch", source)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12)


def test_variable_of_data_shares_the_parameters_memory(float64_default):
    for lib in (kiln, libraries("torch")[0]):
        layer = lib.nn.Linear(3, 2, bias=False)
        variable = lib.autograd.Variable(layer.weight.data)
        with lib.no_grad():
            layer.weight.fill_(2.0)
        assert float(variable.sum()) == 12.0
