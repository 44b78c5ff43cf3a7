"""``kiln.nn.utils.fusion`` (``frontend/fusion.py``) against torch 2.13's ``torch.nn.utils.fusion`` in float64: a
Conv2d (no bias) + BatchNorm2d, a ConvTranspose2d + BatchNorm2d(affine=False) and a Linear + BatchNorm1d, each pair
trained into running statistics then fused in eval mode (the fused layer's output, weights and requires_grad); the
eval-mode check; ``skip_init``; and the module paths scripts import (``torch.nn.utils.clip_grad``,
``convert_parameters``)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

X = np.sin(np.arange(100.0)).reshape(2, 2, 5, 5)
XL = np.cos(np.arange(8.0)).reshape(2, 4)


def _pairs(lib, states=None):
    """The three (layer, BatchNorm, input, transpose) pairs, with running statistics from two training batches."""
    nn = libraries(lib.__name__)[1]
    lib.manual_seed(0)
    pairs = [nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3)).double(),
             nn.Sequential(nn.ConvTranspose2d(2, 3, 2), nn.BatchNorm2d(3, affine=False)).double(),
             nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()]
    for pair, state in zip(pairs, states or [None] * 3):
        if state is not None:
            pair.load_state_dict({key: lib.tensor(value) for key, value in state.items()})
    states = [{key: np.array(value.detach().numpy()) for key, value in pair.state_dict().items()} for pair in pairs]
    inputs = [lib.tensor(X), lib.tensor(X), lib.tensor(XL)]
    for pair, x in zip(pairs, inputs):
        pair(x), pair(x * 2)
        pair.eval()
    return pairs, inputs, states


def _fused(lib, states=None):
    fusion = importlib.import_module(lib.__name__ + ".nn.utils.fusion")
    pairs, inputs, states = _pairs(lib, states)
    fused = [fusion.fuse_conv_bn_eval(*pairs[0]), fusion.fuse_conv_bn_eval(*pairs[1], transpose=True),
             fusion.fuse_linear_bn_eval(*pairs[2])]
    record = []
    for pair, layer, x in zip(pairs, fused, inputs):
        record += [pair(x).detach().numpy(), layer(x).detach().numpy(), layer.weight.detach().numpy(),
                   layer.bias.detach().numpy(), [layer.weight.requires_grad, layer.bias.requires_grad]]
    return record, states


def test_fused_layers_as_torch():
    torch = require_torch()
    ours, states = _fused(kiln)
    theirs, _ = _fused(torch, states)
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours[0], ours[1], rtol=1e-12, atol=1e-14)  # the fused conv computes bn(conv(x))


def test_fusion_refuses_training_mode_as_torch():
    require_torch()
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        fusion = importlib.import_module(name + ".nn.utils.fusion")
        with pytest.raises(AssertionError, match="Fusion only for eval!"):
            fusion.fuse_conv_bn_eval(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))


def test_skip_init_and_module_paths_as_torch():
    torch = require_torch()
    for lib in (kiln, torch):
        layer = lib.nn.utils.skip_init(lib.nn.Linear, 4, 3, bias=False)
        assert tuple(layer.weight.shape) == (3, 4) and layer.bias is None
        with pytest.raises(RuntimeError, match="Expected a Module"):
            lib.nn.utils.skip_init(int)
        clip_grad = importlib.import_module(lib.__name__ + ".nn.utils.clip_grad")
        convert = importlib.import_module(lib.__name__ + ".nn.utils.convert_parameters")
        assert clip_grad.clip_grad_norm_ is lib.nn.utils.clip_grad_norm_
        assert convert.parameters_to_vector is lib.nn.utils.parameters_to_vector
