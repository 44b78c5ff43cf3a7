"""A checkpoint of the deprecated ``nn.utils.weight_norm`` (``weight_g``/``weight_v``) loads into a model under
``nn.utils.parametrizations.weight_norm`` (``parametrizations.weight.original0/1``), as PyTorch 2.13's load hook
renames the keys: an old WaveNet/HiFi-GAN checkpoint in new code. kiln refused it (missing and unexpected keys)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch


def vocoder_block(lib, deprecated):
    weight_norm = lib.nn.utils.weight_norm if deprecated else lib.nn.utils.parametrizations.weight_norm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's deprecation of nn.utils.weight_norm
        return lib.nn.Sequential(weight_norm(lib.nn.Conv1d(2, 4, 3, dilation=2)), lib.nn.Tanh(),
                                 weight_norm(lib.nn.Conv1d(4, 3, 1), dim=None), lib.nn.Conv1d(3, 3, 1))


def old_checkpoint(torch):
    torch.manual_seed(0)
    return {key: value.detach().numpy().copy() for key, value in vocoder_block(torch, deprecated=True).state_dict().items()}


def test_loads_and_computes_as_torch(float64_default):
    torch = float64_default
    checkpoint = old_checkpoint(torch)
    assert "0.weight_g" in checkpoint and "2.weight_v" in checkpoint
    x = np.linspace(-1, 1, 2 * 2 * 9).reshape(2, 2, 9)
    outputs = []
    for lib in (kiln, torch):
        model = vocoder_block(lib, deprecated=False)
        result = model.load_state_dict({key: lib.tensor(value) for key, value in checkpoint.items()})
        assert not result.missing_keys and not result.unexpected_keys
        assert "0.parametrizations.weight.original0" in model.state_dict()
        outputs.append(np.asarray(model(lib.tensor(x)).detach().numpy()))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-12, atol=1e-14)


def test_a_top_level_module_and_an_incomplete_pair(float64_default):
    torch = float64_default
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old = {key: value.detach().numpy() for key, value in torch.nn.utils.weight_norm(torch.nn.Linear(3, 2)).state_dict().items()}
    model = kiln.nn.utils.parametrizations.weight_norm(kiln.nn.Linear(3, 2))
    model.load_state_dict({key: kiln.tensor(value) for key, value in old.items()})
    np.testing.assert_allclose(np.asarray(model.weight.detach().numpy()), old["weight_v"] * old["weight_g"]
                               / np.linalg.norm(old["weight_v"], axis=1, keepdims=True), rtol=1e-12)
    del old["weight_v"]  # only g: nothing renamed, the keys are reported as before
    with pytest.raises(Exception, match="missing keys.*original0.*unexpected keys.*weight_g"):
        model.load_state_dict({key: kiln.tensor(value) for key, value in old.items()})
