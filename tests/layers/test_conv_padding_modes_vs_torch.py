"""``Conv2d``/``Conv1d`` with ``padding="same"``/``"valid"`` and ``padding_mode`` reflect, replicate and circular, and
``F.conv2d`` on an unbatched input, against PyTorch in float64: outputs, weight, bias and input gradients to rtol
1e-10; the reprs as PyTorch's; the errors."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from layer_parity import assert_layer_matches_torch, normal
from oracles import require

CASES = {  # constructor arguments after (in, out, kernel)
    "same_odd_kernel": {"padding": "same"},
    "same_even_kernel_dilated": {"padding": "same", "dilation": 3, "kernel": 4},
    "valid": {"padding": "valid"},
    "reflect": {"padding": 2, "padding_mode": "reflect"},
    "replicate_strided": {"padding": 1, "padding_mode": "replicate", "stride": 2},
    "circular_grouped": {"padding": (1, 2), "padding_mode": "circular", "groups": 2},
    "same_reflect": {"padding": "same", "padding_mode": "reflect", "kernel": 4},
}


def _arguments(options, dims):
    options = dict(options)
    kernel = options.pop("kernel", 3)
    if dims == 1 and isinstance(options.get("padding"), tuple):
        options["padding"] = options["padding"][0]
    return kernel, options


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dims", [1, 2])
def test_padding_options_match_torch(case, dims):
    torch = require("torch")
    kernel, options = _arguments(CASES[case], dims)
    ours = getattr(nn, f"Conv{dims}d")(4, 6, kernel, dtype="float64", **options)
    theirs = getattr(torch.nn, f"Conv{dims}d")(4, 6, kernel, dtype=torch.float64, **options)
    assert repr(ours) == repr(theirs)
    assert_layer_matches_torch(torch, ours, theirs, [normal(2, 4, *(7,) * dims, dtype="float64")])


def test_conv2d_takes_an_unbatched_input():
    torch = require("torch")
    x, w, b = normal(3, 5, 5, dtype="float64"), normal(4, 3, 3, 3, dtype="float64", seed=1), normal(4, dtype="float64", seed=2)
    graph = kiln.trace(lambda x, w, b: F.conv2d(x, w, b, padding="same"), *[kiln.TensorSpec(a.shape, "float64") for a in (x, w, b)])
    ours = kiln.backends.numpy.NumpyBackend().compile(graph)(x, w, b)[0]
    np.testing.assert_allclose(ours, torch.nn.functional.conv2d(*map(torch.tensor, (x, w, b)), padding="same").numpy(), rtol=1e-10)


def test_bad_padding_options_are_refused():
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(2, 2, 3, padding_mode="mirror")
    with pytest.raises(kiln.TraceError, match="padding='same' needs stride 1"):
        kiln.trace(nn.Conv2d(2, 2, 3, padding="same", stride=2), kiln.TensorSpec((1, 2, 5, 5)))
    with pytest.raises(kiln.TraceError, match="padding must be ints, 'valid' or 'same'"):
        kiln.trace(nn.Conv2d(2, 2, 3, padding="full"), kiln.TensorSpec((1, 2, 5, 5)))
