"""``nn.Sequential``'s item assignment, deletion, ``insert`` and ``pop`` as torch 2.13's: the layers' names after each
(renumbered after a deletion), the forward, and torch's errors (a fine-tuning script replacing the head with
``model[-1] = nn.Linear(...)``)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch


def _edited(name):
    lib, nn, _ = libraries(name)
    lib.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    names = [list(model._modules)]
    model[-1] = nn.Identity()
    model[1] = nn.Sigmoid()
    names.append([type(layer).__name__ for layer in model])
    del model[2]
    names.append(list(model._modules))
    del model[1:3]
    names.append(list(model._modules))
    model.insert(1, nn.Tanh())
    model.insert(-1, nn.ReLU())
    popped = model.pop(0)
    names.append([list(model._modules), [type(layer).__name__ for layer in model], type(popped).__name__])
    output = model(lib.tensor(np.linspace(-1, 1, 8).reshape(2, 4)))
    return names, np.array(output.detach().numpy())


def test_edits_as_torch():
    require_torch()
    (ours, ours_out), (theirs, theirs_out) = _edited("kiln"), _edited("torch")
    assert ours == theirs
    np.testing.assert_allclose(ours_out, theirs_out, rtol=1e-14)


@pytest.mark.parametrize("edit, error, message", [
    (lambda model, nn: model.__setitem__(3, nn.ReLU()), IndexError, "index 3 is out of range"),
    (lambda model, nn: model.__delitem__(-4), IndexError, "index -4 is out of range"),
    (lambda model, nn: model.insert(5, nn.ReLU()), IndexError, "Index out of range: 5"),
    (lambda model, nn: model.insert(0, "relu"), AssertionError, "module should be of type"),
])
def test_errors_as_torch(edit, error, message):
    require_torch()
    for name in ("kiln", "torch"):
        _, nn, _ = libraries(name)
        model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        with pytest.raises(error, match=message):
            edit(model, nn)
