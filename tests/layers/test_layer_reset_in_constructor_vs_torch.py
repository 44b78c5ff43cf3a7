"""A layer subclass's own ``reset_parameters`` runs at construction, as PyTorch's constructors end with
``self.reset_parameters()``: schnetpack's ``Dense(nn.Linear)`` puts its Xavier-uniform weight and zero bias there and
never calls it, so in kiln (whose constructors draw their defaults themselves) it kept ``nn.Linear``'s
kaiming-uniform weight and random bias, silently. Constant initialisations are compared exactly, Dense's weight by its
bound; ``from_pretrained`` weights are not reset, as torch's (``frontend/layer_resets.reset_if_overridden``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oracles import libraries


def dense_class(torch, nn):
    """schnetpack 2's ``schnetpack.nn.Dense``, as written."""

    class Dense(nn.Linear):
        def __init__(self, in_features, out_features, bias=True, activation=None,
                     weight_init=torch.nn.init.xavier_uniform_, bias_init=torch.nn.init.zeros_):
            self.weight_init = weight_init
            self.bias_init = bias_init
            super(Dense, self).__init__(in_features, out_features, bias)
            self.activation = activation
            if self.activation is None:
                self.activation = nn.Identity()

        def reset_parameters(self):
            self.weight_init(self.weight)
            if self.bias is not None:
                self.bias_init(self.bias)

    return Dense


def constant_subclass(nn, base):
    """``base`` with a ``reset_parameters`` that fills every parameter with 0.5 (the weight) or 0.25."""

    class Constant(base):
        def reset_parameters(self):
            for name, parameter in self.named_parameters():
                nn.init.constant_(parameter, 0.5 if "weight" in name else 0.25)

    return Constant


BASES = {  # name: (base class name, constructor arguments)
    "Conv2d": ("Conv2d", (3, 4, 3)),
    "ConvTranspose1d": ("ConvTranspose1d", (3, 4, 2)),
    "Bilinear": ("Bilinear", (3, 4, 2)),
    "Embedding": ("Embedding", (5, 3)),
    "EmbeddingBag": ("EmbeddingBag", (5, 3)),
    "LayerNorm": ("LayerNorm", (4,)),
    "GroupNorm": ("GroupNorm", (2, 4)),
    "BatchNorm1d": ("BatchNorm1d", (4,)),
    "InstanceNorm1d affine": ("InstanceNorm1d", (4, 1e-5, 0.1, True)),
    "PReLU": ("PReLU", (3,)),
    "GRU": ("GRU", (3, 4)),
    "LSTMCell": ("LSTMCell", (3, 4)),
}


@pytest.mark.parametrize("name", list(BASES))
def test_a_subclass_reset_runs_at_construction_as_torch(name):
    base, arguments = BASES[name]
    states = []
    for library in ("kiln", "torch"):
        lib, nn, _ = libraries(library)
        layer = constant_subclass(nn, getattr(nn, base))(*arguments)
        states.append({key: np.array(value.detach().numpy()) for key, value in layer.state_dict().items()})
    assert set(states[0]) == set(states[1])
    for key in states[1]:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=f"{name}: {key}")


def test_schnetpack_dense_gets_its_own_initialisation():
    for library in ("kiln", "torch"):
        torch, nn, _ = libraries(library)
        torch.manual_seed(0)
        layer = dense_class(torch, nn)(64, 32)
        weight = np.abs(np.array(layer.weight.detach().numpy()))
        assert not np.array(layer.bias.detach().numpy()).any(), library
        xavier_bound, default_bound = math.sqrt(6 / (64 + 32)), 1 / math.sqrt(64)
        assert default_bound < weight.max() <= xavier_bound, library


def test_from_pretrained_weights_are_not_reset():
    for library in ("kiln", "torch"):
        torch, nn, _ = libraries(library)
        pretrained = np.arange(6.0, dtype=np.float32).reshape(3, 2)
        layer = constant_subclass(nn, nn.Embedding).from_pretrained(torch.tensor(pretrained))
        np.testing.assert_array_equal(np.array(layer.weight.detach().numpy()), pretrained, err_msg=library)
