"""The built-in layers' ``reset_parameters`` (``frontend/layer_resets.py``) against PyTorch 2.13's: every layer torch
gives one has it in kiln; after every parameter is overwritten, the reset draws again in place from torch's
distribution (the same bound and spread, or the same constants, padding row zero), the Parameter objects kept (an
optimizer built before still holds them), and the norms' running statistics reset. torch_geometric's SchNet calls
``self.embedding.reset_parameters()``, which kiln lacked (the SchNet/EGNN/DeepFM porting probe)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

LAYERS = {  # name: (constructor of (nn,), the method torch names, an input for a norm's running statistics or None)
    "Linear": (lambda nn: nn.Linear(64, 64), "reset_parameters", None),
    "Bilinear": (lambda nn: nn.Bilinear(40, 30, 64), "reset_parameters", None),
    "Conv1d": (lambda nn: nn.Conv1d(8, 64, 3), "reset_parameters", None),
    "Conv2d groups": (lambda nn: nn.Conv2d(6, 64, 3, groups=2), "reset_parameters", None),
    "Conv3d": (lambda nn: nn.Conv3d(4, 64, 2), "reset_parameters", None),
    "ConvTranspose1d groups": (lambda nn: nn.ConvTranspose1d(8, 64, 3, groups=2), "reset_parameters", None),
    "ConvTranspose2d": (lambda nn: nn.ConvTranspose2d(6, 64, 3), "reset_parameters", None),
    "ConvTranspose3d": (lambda nn: nn.ConvTranspose3d(4, 64, 2), "reset_parameters", None),
    "Embedding padding_idx": (lambda nn: nn.Embedding(100, 20, padding_idx=3), "reset_parameters", None),
    "EmbeddingBag padding_idx": (lambda nn: nn.EmbeddingBag(100, 20, mode="sum", padding_idx=0), "reset_parameters", None),
    "LayerNorm": (lambda nn: nn.LayerNorm(30), "reset_parameters", None),
    "GroupNorm": (lambda nn: nn.GroupNorm(4, 32), "reset_parameters", None),
    "RMSNorm": (lambda nn: nn.RMSNorm(64), "reset_parameters", None),
    "BatchNorm1d": (lambda nn: nn.BatchNorm1d(6), "reset_parameters", (5, 6)),
    "BatchNorm2d running stats": (lambda nn: nn.BatchNorm2d(3), "reset_running_stats", (2, 3, 4, 4)),
    "InstanceNorm2d tracking": (lambda nn: nn.InstanceNorm2d(3, affine=True, track_running_stats=True), "reset_parameters",
                                (2, 3, 4, 4)),
    "PReLU": (lambda nn: nn.PReLU(64, init=0.1), "reset_parameters", None),
    "RNN bidirectional": (lambda nn: nn.RNN(10, 64, 2, bidirectional=True), "reset_parameters", None),
    "LSTM proj_size": (lambda nn: nn.LSTM(10, 40, proj_size=5), "reset_parameters", None),
    "GRU": (lambda nn: nn.GRU(10, 40), "reset_parameters", None),
    "LSTMCell": (lambda nn: nn.LSTMCell(10, 40), "reset_parameters", None),
    "GRUCell": (lambda nn: nn.GRUCell(10, 40), "reset_parameters", None),
    "RNNCell": (lambda nn: nn.RNNCell(10, 64), "reset_parameters", None),
    "MultiheadAttention bias_kv": (lambda nn: nn.MultiheadAttention(128, 4, add_bias_kv=True), "_reset_parameters", None),
    "MultiheadAttention kdim vdim": (lambda nn: nn.MultiheadAttention(64, 4, kdim=24, vdim=40), "_reset_parameters", None),
    "Transformer": (lambda nn: nn.Transformer(64, 2, 1, 1, 64), "_reset_parameters", None),
}


def reset_values(name: str, lib_name: str) -> dict[str, np.ndarray]:
    """The layer's state after its parameters are set to 7 (and the norms' statistics moved by a training forward),
    then the reset, by name; also checks the reset keeps each Parameter object."""
    lib, nn, _ = libraries(lib_name)
    make, method, shape = LAYERS[name]
    lib.manual_seed(0)
    layer = make(nn)
    if shape is not None:
        layer.train()(lib.tensor(np.random.default_rng(1).standard_normal(shape) + 2.0, dtype=lib.float32))
    before = {key: id(parameter) for key, parameter in layer.named_parameters()}
    for parameter in layer.parameters():
        nn.init.constant_(parameter, 7.0)
    getattr(layer, method)()
    assert {key: id(parameter) for key, parameter in layer.named_parameters()} == before
    return {key: np.array(value.detach().numpy(), np.float64) for key, value in layer.state_dict().items()}


def assert_same_distribution(ours: np.ndarray, theirs: np.ndarray, where: str) -> None:
    """Constants (and what the reset leaves alone) equal; random draws (none left at 7) with the same spread and mean
    size, to the sampling error of 64 draws or more (35%: about three times its standard error)."""
    if np.all(theirs == theirs.flat[0]):  # a constant, or left alone (7) as torch leaves it
        np.testing.assert_array_equal(ours, theirs, err_msg=where)
        return
    assert not np.any(ours == 7.0), f"{where}: not drawn again"
    for statistic in (np.std, lambda values: np.abs(values).mean()):
        assert statistic(ours) == pytest.approx(statistic(theirs), rel=0.35), where


@pytest.mark.parametrize("name", list(LAYERS))
def test_reset_draws_from_torchs_distribution(name):
    require_torch()
    ours, theirs = reset_values(name, "kiln"), reset_values(name, "torch")
    assert set(ours) == set(theirs)
    for key in theirs:
        assert_same_distribution(ours[key], theirs[key], f"{name}: {key}")


@pytest.mark.parametrize("name", ["Embedding padding_idx", "EmbeddingBag padding_idx"])
def test_reset_zeroes_the_padding_row(name):
    padding_row = LAYERS[name][0](kiln.nn).padding_idx
    weight = reset_values(name, "kiln")["weight"]
    assert not weight[padding_row].any() and np.all(np.delete(weight, padding_row, axis=0) != 0)


def test_every_layer_with_a_torch_reset_has_one():
    """``hasattr(m, 'reset_parameters')``, the guard of a model-wide re-initialisation, agrees for every layer."""
    torch = require_torch()
    for name, (make, method, _) in LAYERS.items():
        assert hasattr(make(torch.nn), method) and hasattr(make(kiln.nn), method), name


def test_lazy_layer_reset_before_its_first_call_does_nothing():
    """PyTorch's lazy modules skip the reset while their parameters are uninitialized; the first call draws them."""
    layer = kiln.nn.LazyLinear(4)
    layer.reset_parameters()
    assert layer(kiln.ones(2, 3)).shape == (2, 4)


def test_reinitialising_a_model_through_modules_reaches_the_optimizer():
    """``for m in model.modules(): if hasattr(m, 'reset_parameters'): m.reset_parameters()`` writes the parameters an
    optimizer built before holds: its next step starts from the new values."""
    nn = kiln.nn
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 1))
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.0)
    before = [np.array(p.detach().numpy()) for p in model.parameters()]
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    model(kiln.ones(2, 3)).sum().backward()
    optimizer.step()
    after = [np.array(p.detach().numpy()) for p in model.parameters()]
    assert not np.array_equal(before[0], after[0]) and not np.array_equal(before[-1], after[-1])
