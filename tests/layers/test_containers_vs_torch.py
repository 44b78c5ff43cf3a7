"""Module containers (``ModuleList``, ``ModuleDict``), the stacked ``TransformerEncoder``/``TransformerDecoder``,
``Unflatten`` and the Module methods PyTorch code calls (``apply``, ``modules``, ``add_module``, ``del``): names,
``state_dict`` keys, outputs and gradients against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from layer_parity import assert_layer_matches_torch
from oracles import require

RNG = np.random.default_rng(0)


# The stacked transformers are compared in float64: in float32 a gradient entry that cancels (0.0136 in
# layers.1.linear2.weight, whose entries reach 11.7) came out 1.35e-6 apart on an AVX-512 machine (torch's MKL/oneDNN
# kernels and NumPy's OpenBLAS sum in different orders), one float32 ulp of the array's scale but past the per-entry
# atol 1e-6. In float64 the largest difference measured is 7e-15 (under 1e-3 of rtol 1e-10 / atol 1e-12): a margin
# no machine's summation order uses up, while a wrong layer order or a shared weight is off by O(1).
_FLOAT64 = {"rtol": 1e-10, "atol": 1e-12}


def normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def normal64(*shape):
    return RNG.standard_normal(shape)


def _stack(nn_module, container: str):
    """An MLP whose layers live in a ModuleList or a ModuleDict (the same class body for kiln and torch)."""

    class Stack(nn_module.Module):
        def __init__(self):
            super().__init__()
            layers = [nn_module.Linear(6, 8), nn_module.Linear(8, 8), nn_module.Linear(8, 3)]
            self.blocks = nn_module.ModuleList(layers) if container == "list" else nn_module.ModuleDict({"a": layers[0], "b": layers[1], "c": layers[2]})

        def forward(self, x):
            for block in (self.blocks if container == "list" else self.blocks.values()):
                x = block(x).tanh()
            return x

    return Stack()


@pytest.mark.parametrize("container", ["list", "dict"])
def test_a_model_built_on_a_container_matches_torch(container):
    torch = require("torch")
    kiln.manual_seed(0)
    module, reference = _stack(nn, container), _stack(torch.nn, container)
    assert list(module.state_dict()) == list(reference.state_dict())  # blocks.0.weight / blocks.a.weight, ...
    assert_layer_matches_torch(torch, module, reference, [normal(4, 6)])


def test_module_list_edits_renumber_as_torch():
    first, second, third = nn.Linear(2, 2), nn.Linear(2, 3), nn.Linear(3, 1)
    layers = nn.ModuleList([first])
    layers.append(third)
    layers.insert(1, second)
    assert list(layers) == [first, second, third] and layers[-1] is third and len(layers) == 3
    assert [name for name, _ in layers.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]
    del layers[0]
    assert list(layers) == [second, third] and [name for name, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]
    assert list(layers[1:]) == [third] and isinstance(layers[1:], nn.ModuleList)
    layers[0] = first
    assert layers[0] is first and len(list(layers.parameters())) == 4
    with pytest.raises(IndexError, match="out of range"):
        layers[5]
    with pytest.raises(TypeError, match="kiln Modules"):
        layers.append(np.zeros(3))


def test_module_dict_keys_and_removal():
    blocks = nn.ModuleDict([("encoder", nn.Linear(2, 4)), ("head", nn.Linear(4, 1))])
    assert list(blocks) == ["encoder", "head"] and "head" in blocks and len(blocks) == 2
    blocks["extra"] = nn.Linear(1, 1)
    removed = blocks.pop("encoder")
    assert isinstance(removed, nn.Linear) and list(blocks.keys()) == ["head", "extra"]
    assert [name for name, _ in blocks.named_parameters()] == ["head.weight", "head.bias", "extra.weight", "extra.bias"]
    with pytest.raises(KeyError, match="without '.'"):
        blocks["a.b"] = nn.Linear(1, 1)


def test_module_methods_pytorch_code_calls():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    visited = []
    model.apply(lambda m: visited.append(type(m).__name__))
    assert visited == ["Linear", "ReLU", "Linear", "Sequential"]  # children first, as torch
    assert [type(m).__name__ for m in model.modules()] == ["Sequential", "Linear", "ReLU", "Linear"]
    assert [name for name, _ in model.named_children()] == ["0", "1", "2"]
    model.add_module("3", nn.Tanh())
    assert len(model) == 4
    delattr(model, "3")  # del removes a child or parameter from the module's registries too
    layer = model[0]
    del layer.bias
    assert len(model) == 3 and not hasattr(layer, "bias")
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "2.weight", "2.bias"]


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_matches_torch(batch_first):
    """In float64 (the point is the stacking, not float32 rounding: see ``_FLOAT64``)."""
    torch = require("torch")
    kiln.manual_seed(1)
    options = {"dim_feedforward": 16, "dropout": 0.0, "batch_first": batch_first, "norm_first": True}
    module = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, **options, dtype="float64"), 2,
                                   norm=nn.LayerNorm(8, dtype="float64"))
    reference = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, **options), 2, norm=torch.nn.LayerNorm(8),
                                            enable_nested_tensor=False).double()
    assert list(module.state_dict()) == list(reference.state_dict())
    for name, value in module.state_dict().items():  # deep copies: every layer starts from the given layer's weights
        if name.startswith("layers.1."):
            np.testing.assert_array_equal(value, module.state_dict()["layers.0." + name[len("layers.1."):]])
    module.layers[1].linear1.weight.data = normal64(16, 8)  # then differ, so a wrong layer order would show
    padding = np.array([[False] * 5, [False, False, False, True, True]])
    x = normal64(2, 5, 8) if batch_first else normal64(5, 2, 8)
    call = lambda m, x, pad: m(x, src_key_padding_mask=pad)  # noqa: E731
    assert_layer_matches_torch(torch, module, reference, [x, padding], call=call, **_FLOAT64)


def test_transformer_decoder_matches_torch():
    """In float64, as the encoder's."""
    torch = require("torch")
    kiln.manual_seed(2)
    options = {"dim_feedforward": 12, "dropout": 0.0, "batch_first": True}
    module = nn.TransformerDecoder(nn.TransformerDecoderLayer(6, 2, **options, dtype="float64"), 2)
    reference = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(6, 2, **options), 2).double()
    module.layers[0].linear2.weight.data = normal64(6, 12)
    causal = np.triu(np.ones((4, 4), dtype=bool), 1)
    call = lambda m, tgt, memory, mask: m(tgt, memory, tgt_mask=mask)  # noqa: E731
    inputs = [normal64(2, 4, 6), normal64(2, 3, 6), causal]
    assert_layer_matches_torch(torch, module, reference, inputs, call=call, **_FLOAT64)


def test_unflatten_matches_torch_and_trains():
    torch = require("torch")
    kiln.manual_seed(3)
    module = nn.Sequential(nn.Linear(6, 12), nn.Unflatten(1, (3, -1)), nn.Flatten())
    reference = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Unflatten(1, (3, -1)), torch.nn.Flatten())
    assert_layer_matches_torch(torch, module, reference, [normal(5, 6)])
    model = nn.Sequential(nn.Linear(6, 12), nn.Unflatten(-1, (3, 4)), nn.Flatten(), nn.Linear(12, 3))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.5))
    x, y = normal(16, 6), np.arange(16) % 3
    losses = [float(step(x, y)) for _ in range(20)]
    assert losses[-1] < 0.8 * losses[0]


def test_a_replaced_layer_keeps_its_place_in_the_state_dict():
    """``model.fc = Linear(...)`` again: the names keep their order (the optimizer's and state_dict's), as in PyTorch."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 4))
    model[0].weight = nn.Parameter(np.ones((3, 2), np.float32))
    setattr(model, "0", nn.Linear(2, 3))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
