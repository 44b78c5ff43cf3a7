"""``get_buffer``, ``set_submodule``, ``register_module`` and ``to_empty`` as torch's (kiln had ``get_submodule`` and
``get_parameter`` only): members by dotted path, a submodule replaced in its parent under its name, refusals with
torch's exception types."""

from __future__ import annotations

import pytest

from oracles import require_torch


def _model(lib):
    nn = lib.nn
    return nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.BatchNorm1d(3), nn.ReLU()))


def _paths(lib):
    nn, model = lib.nn, _model(lib)
    model.set_submodule("1.1", nn.Tanh())
    model.register_module("head", nn.Linear(3, 1))
    empty = nn.Linear(4, 2).to_empty(device="cpu")
    return {
        "buffer": tuple(model.get_buffer("1.0.running_var").shape), "parameter": tuple(model.get_parameter("head.bias").shape),
        "replaced": [type(m).__name__ for m in model.modules()], "keys": list(model.state_dict()),
        "empty": (tuple(empty.weight.shape), str(empty.weight.dtype).split(".")[1], empty.weight.requires_grad),
    }


def test_paths_as_torch():
    import kiln

    assert _paths(kiln) == _paths(require_torch())


@pytest.mark.parametrize("call, error", [
    (lambda m, nn: m.get_buffer("0.weight"), AttributeError), (lambda m, nn: m.get_buffer("2.x"), AttributeError),
    (lambda m, nn: m.set_submodule("", nn.ReLU()), ValueError), (lambda m, nn: m.set_submodule("0", 3), ValueError),
    (lambda m, nn: m.set_submodule("0.weight", nn.ReLU()), AttributeError),
    (lambda m, nn: m.set_submodule("9", nn.ReLU(), strict=True), AttributeError),
])
def test_refusals_as_torch(call, error):
    import kiln

    torch = require_torch()
    for lib in (kiln, torch):
        with pytest.raises(error):
            call(_model(lib), lib.nn)
