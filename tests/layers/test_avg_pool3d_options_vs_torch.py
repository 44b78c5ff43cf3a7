"""``F.avg_pool3d`` / ``nn.AvgPool3d`` with PyTorch's every option (``ceil_mode``, ``count_include_pad=False``,
``divisor_override``, padding, unbatched input) against torch 2.13: values and input gradients in float64 (rtol 1e-10)
and float32. Before, kiln refused all but the defaults ("supports ceil_mode=False, count_include_pad=True")."""

from __future__ import annotations

import numpy as np
import pytest

import kiln.nn as nn
import kiln.nn.functional as F
from layer_parity import assert_layer_matches_torch
from oracles import require

SHAPE = (2, 3, 7, 6, 5)  # odd and even sides: ceil_mode keeps a partial window on some axes, drops one on others
AVG_POOLS = {
    "plain": dict(kernel_size=3, stride=2, padding=1),
    "exclude_pad": dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    "ceil": dict(kernel_size=2, ceil_mode=True),
    "ceil_padding": dict(kernel_size=(3, 2, 4), stride=(2, 2, 3), padding=(1, 1, 2), ceil_mode=True),
    "ceil_exclude_pad": dict(kernel_size=(3, 2, 4), stride=(2, 2, 3), padding=(1, 1, 2), ceil_mode=True,
                             count_include_pad=False),
    "ceil_dropped_window": dict(kernel_size=3, stride=3, padding=1, ceil_mode=True, count_include_pad=False),
    "divisor": dict(kernel_size=3, stride=2, padding=1, divisor_override=5),
    "divisor_over_the_rest": dict(kernel_size=(2, 3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False,
                                  divisor_override=-4),
}


def tolerances(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(AVG_POOLS))
def test_avg_pool3d_matches_torch(case, dtype):
    torch = require("torch")
    options = AVG_POOLS[case]
    call = lambda functional: lambda m, t: functional.avg_pool3d(t, **options)  # noqa: E731
    for shape in (SHAPE, SHAPE[1:]):  # batched and unbatched
        x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
        assert_layer_matches_torch(torch, nn.Module(), torch.nn.Module(), [x], call=call(F),
                                   torch_call=call(torch.nn.functional), **tolerances(dtype))


@pytest.mark.parametrize("case", ["ceil_exclude_pad", "divisor_over_the_rest"])
def test_avg_pool3d_layer_matches_torch(case):
    torch = require("torch")
    x = np.random.default_rng(2).standard_normal(SHAPE)
    assert_layer_matches_torch(torch, nn.AvgPool3d(**AVG_POOLS[case]), torch.nn.AvgPool3d(**AVG_POOLS[case]), [x],
                               **tolerances("float64"))
