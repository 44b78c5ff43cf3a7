"""Module, Parameter, layers and the Keras-style Dense."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
        self.head = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.head(self.body(x))


def test_named_parameters_state_dict_and_repr():
    net = Net()
    assert [name for name, _ in net.named_parameters()] == ["body.0.weight", "body.0.bias", "head.weight"]
    assert {k: v.shape for k, v in net.state_dict().items()} == {"body.0.weight": (3, 4), "body.0.bias": (3,), "head.weight": (2, 3)}
    assert len(list(net.parameters())) == 3
    text = repr(net)
    assert "(body): Sequential(" in text and "(0): Linear(in_features=4, out_features=3, bias=True)" in text
    assert "(head): Linear(in_features=3, out_features=2, bias=False)" in text


def test_load_state_dict_checks_everything_before_writing():
    net = Net()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    bad = {k: np.ones_like(v) for k, v in before.items()}
    bad["head.weight"] = np.ones((3, 3), np.float32)
    with pytest.raises(kiln.KilnError, match="head.weight has shape"):
        net.load_state_dict(bad)
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name])  # nothing was written
    with pytest.raises(kiln.KilnError, match="missing keys"):
        net.load_state_dict({"head.weight": np.ones((2, 3))})
    good = {k: np.full_like(v, 0.5) for k, v in before.items()}
    net.load_state_dict(good)
    assert all((v == 0.5).all() for v in net.state_dict().values())


def test_weights_copy_in_from_numpy_and_forward_uses_them():
    layer = nn.Linear(3, 2)
    with kiln.no_grad():  # as PyTorch requires for a parameter that requires grad
        layer.weight.copy_(np.arange(6, dtype=np.float32).reshape(2, 3))
        layer.bias.copy_(np.array([1.0, -1.0]))
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(kiln.compile(layer)(x), [[9.0, 25.0]])


def test_dense_builds_on_first_call_and_matches_linear_layout():
    model = nn.Sequential([nn.Dense(5, activation="relu"), nn.Dense(2, activation="softmax")])
    assert list(model.parameters()) == []
    model.build((7,))
    assert {k: v.shape for k, v in model.state_dict().items()} == {"0.weight": (5, 7), "0.bias": (5,), "1.weight": (2, 5), "1.bias": (2,)}
    out = kiln.compile(model)(np.ones((3, 7), np.float32))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)


def test_unknown_activation_and_unbuilt_optimizer_are_clear_errors():
    with pytest.raises(kiln.KilnError, match="unknown activation"):
        nn.Dense(3, activation="swishy")
    with pytest.raises(kiln.KilnError, match=r"empty parameter list.*a Keras model builds its weights first \(model.build\(input_shape\)"):
        kiln.optim.SGD(nn.Sequential([nn.Dense(3)]).parameters(), lr=0.1)


def test_module_without_super_init_is_a_clear_error():
    class Forgetful(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(kiln.KilnError, match="super"):
        Forgetful()
