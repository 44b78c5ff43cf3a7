"""``nn.Conv3d(..., padding_mode=...)``: reflect, replicate and circular pad the input first, as torch's ``Conv3d``
does (kiln refused every mode but zeros before). Values, weight, bias and input gradients against torch 2.13 in float64
(rtol 1e-10), with int, per-axis and ``"same"`` padding, stride and dilation; the repr names the mode."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from layer_parity import assert_layer_matches_torch
from oracles import require

SHAPE = (2, 3, 5, 6, 4)
CASES = {
    "int": dict(kernel_size=3, padding=1),
    "per_axis_strided": dict(kernel_size=(3, 2, 3), stride=(2, 1, 2), padding=(1, 1, 2)),
    "same_dilated": dict(kernel_size=(2, 3, 3), padding="same", dilation=(1, 2, 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_conv3d_padding_mode_matches_torch(padding_mode, case, float64_default):
    torch = require("torch")
    options = dict(CASES[case], padding_mode=padding_mode)
    kiln.manual_seed(0)
    x = np.random.default_rng(0).standard_normal(SHAPE)
    assert_layer_matches_torch(torch, nn.Conv3d(3, 4, **options), torch.nn.Conv3d(3, 4, **options), [x],
                               rtol=1e-10, atol=1e-12)


def test_conv3d_padding_mode_repr_as_torch():
    torch = require("torch")
    options = dict(kernel_size=3, padding=1, padding_mode="replicate")
    assert repr(nn.Conv3d(3, 4, **options)) == repr(torch.nn.Conv3d(3, 4, **options))
