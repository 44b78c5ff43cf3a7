"""Every layer takes PyTorch's ``device=`` keyword (it was refused by 24 of them, Conv2d and LayerNorm among them, so
``nn.Conv2d(..., device=device)`` and timm-style ``**factory_kwargs`` did not port): checked as ``kiln.device``
checks a name, the parameters as without it; vs torch 2.13's signatures, dtypes and shapes."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import kiln
from oracles import require_torch

LAYERS = {
    "Bilinear": (3, 4, 5), "Conv1d": (2, 3, 3), "Conv2d": (2, 3, 3), "Conv3d": (2, 3, 3), "ConvTranspose1d": (2, 3, 3),
    "ConvTranspose2d": (2, 3, 3), "ConvTranspose3d": (2, 3, 3), "Embedding": (10, 3), "EmbeddingBag": (10, 3),
    "GRUCell": (3, 4), "GroupNorm": (2, 4), "InstanceNorm1d": (3,), "InstanceNorm2d": (3,), "InstanceNorm3d": (3,),
    "LSTMCell": (3, 4), "LayerNorm": (4,), "PReLU": (), "RMSNorm": (4,), "RNNCell": (3, 4), "GRU": (3, 4),
    "TransformerEncoderLayer": (8, 2), "TransformerDecoderLayer": (8, 2), "Linear": (3, 4), "BatchNorm2d": (3,),
}


def _layer_state(lib, name, **factory_kwargs):
    layer = getattr(lib.nn, name)(*LAYERS[name], **factory_kwargs)
    return {key: (tuple(value.shape), str(value.dtype).split(".")[-1]) for key, value in layer.state_dict().items()}


def test_every_layer_whose_torch_twin_takes_device_takes_it():
    torch = require_torch()
    refusing = []
    for name in dir(torch.nn):
        theirs, ours = getattr(torch.nn, name), getattr(kiln.nn, name, None)
        if not (isinstance(theirs, type) and issubclass(theirs, torch.nn.Module)) or ours is None:
            continue
        if "device" in inspect.signature(theirs.__init__).parameters and "device" not in inspect.signature(ours.__init__).parameters:
            refusing.append(name)
    assert refusing == []


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("device", ["cpu", "cuda:0"])
def test_device_keyword_builds_the_same_layer(name, device):
    torch = require_torch()
    ours = _layer_state(kiln, name, device=kiln.device(device), dtype=kiln.float64)
    assert ours == _layer_state(kiln, name, dtype=kiln.float64)
    theirs = _layer_state(torch, name, device="cpu", dtype=torch.float64)
    assert {key: shape for key, (shape, _) in ours.items()} == {key: shape for key, (shape, _) in theirs.items()}
    assert {dtype for _, dtype in theirs.values()} <= {"float64", "int64"}


def test_a_subclass_passes_factory_kwargs_on_as_torchs():
    """timm's pattern: ``factory_kwargs = {"device": device, "dtype": dtype}`` given to each sublayer and to super."""
    for lib in (require_torch(), kiln):
        class ScaledNorm(lib.nn.LayerNorm):
            def __init__(self, dim, device=None, dtype=None):
                factory_kwargs = {"device": device, "dtype": dtype}
                super().__init__(dim, **factory_kwargs)
                self.proj = lib.nn.Conv2d(dim, dim, 1, **factory_kwargs)

        norm = ScaledNorm(4, device="cpu", dtype=lib.float64)
        assert norm.proj.weight.dtype == lib.float64 and tuple(norm.weight.shape) == (4,)
        x = lib.tensor(np.arange(8.0).reshape(2, 4))
        np.testing.assert_allclose(norm(x).detach().numpy(), [[-1.341635, -0.447212, 0.447212, 1.341635]] * 2, rtol=1e-6)


def test_a_bad_device_name_fails_as_torchs():
    torch = require_torch()
    with pytest.raises(RuntimeError):
        torch.nn.Conv2d(2, 3, 3, device="gpu")
    with pytest.raises(ValueError, match="unknown device type 'gpu'"):
        kiln.nn.Conv2d(2, 3, 3, device="gpu")
