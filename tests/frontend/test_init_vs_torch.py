"""``kiln.nn.init`` as ``torch.nn.init``: the same gains, fans and distributions (kiln draws from its own generator),
in place on a Parameter, reproducible under ``kiln.manual_seed``."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require

SHAPES = [(64, 32), (16, 8, 3, 3), (12, 4, 5)]


def test_gains_and_fans_equal_torchs():
    torch = require("torch")
    for name in ["linear", "conv2d", "sigmoid", "tanh", "relu", "selu", "conv_transpose2d"]:
        assert nn.init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name), rel=1e-12)
    for slope in [None, 0.2, 1]:
        assert nn.init.calculate_gain("leaky_relu", slope) == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", slope), rel=1e-12)
    from kiln.frontend.init import fan_in_and_fan_out

    for shape in SHAPES:
        assert fan_in_and_fan_out(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        nn.init.calculate_gain("swish")


@pytest.mark.parametrize("shape", SHAPES)
def test_bounded_initialisers_use_torchs_bounds(shape):
    torch = require("torch")
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    cases = {
        "xavier_uniform_": (lambda p: nn.init.xavier_uniform_(p, gain=2.0), 2.0 * math.sqrt(6 / (fan_in + fan_out))),
        "kaiming_uniform_": (lambda p: nn.init.kaiming_uniform_(p, a=math.sqrt(5)), math.sqrt(3) * math.sqrt(2 / 6) / math.sqrt(fan_in)),
        "kaiming_uniform_fan_out_relu": (lambda p: nn.init.kaiming_uniform_(p, mode="fan_out", nonlinearity="relu"),
                                         math.sqrt(3) * math.sqrt(2) / math.sqrt(fan_out)),
    }
    for name, (initialise, bound) in cases.items():
        parameter = nn.Parameter(np.zeros(shape, np.float32))
        assert initialise(parameter) is parameter and parameter.data.dtype == np.float32
        values = parameter.data
        assert np.abs(values).max() <= bound * (1 + 1e-6) and np.abs(values).max() > 0.9 * bound, name
        assert abs(values.std() - bound / math.sqrt(3)) < 0.1 * bound, name  # uniform on [-b, b]


def test_normal_initialisers_have_torchs_spread():
    weight = nn.Parameter(np.zeros((256, 128, 3), np.float64))
    fan_in, fan_out = 128 * 3, 256 * 3
    nn.init.kaiming_normal_(weight, nonlinearity="relu")
    assert weight.data.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    nn.init.xavier_normal_(weight)
    assert weight.data.std() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.02)
    nn.init.trunc_normal_(weight, mean=1.0, std=2.0, a=-1.0, b=2.0)
    assert weight.data.min() >= -1.0 and weight.data.max() <= 2.0 and weight.data.min() < -0.99 and weight.data.max() > 1.99
    nn.init.normal_(weight, mean=3.0, std=0.5)
    assert weight.data.mean() == pytest.approx(3.0, abs=0.01) and weight.data.std() == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (4, 3, 2, 2)])
def test_orthogonal_rows_or_columns(shape):
    weight = nn.init.orthogonal_(nn.Parameter(np.zeros(shape, np.float64)), gain=1.5)
    flat = weight.data.reshape(shape[0], -1)
    small = min(flat.shape)
    gram = flat @ flat.T if flat.shape[0] == small else flat.T @ flat
    np.testing.assert_allclose(gram, 1.5**2 * np.eye(small), atol=1e-12)


def test_constant_fills_and_reproducibility_under_manual_seed():
    weight = nn.Parameter(np.zeros((3, 4), np.float32))
    np.testing.assert_array_equal(nn.init.constant_(weight, 0.25).data, np.full((3, 4), 0.25, np.float32))
    np.testing.assert_array_equal(nn.init.ones_(weight).data, np.ones((3, 4)))
    np.testing.assert_array_equal(nn.init.zeros_(weight).data, np.zeros((3, 4)))
    np.testing.assert_array_equal(nn.init.eye_(weight).data, np.eye(3, 4))
    draws = []
    for _ in range(2):
        kiln.manual_seed(7)
        draws.append(nn.init.xavier_uniform_(nn.Parameter(np.zeros((5, 5), np.float32))).data.copy())
    np.testing.assert_array_equal(*draws)


def test_initialising_a_model_through_apply_is_what_trains():
    """PyTorch's idiom, ``model.apply(init_fn)``: the compiled step starts from the re-initialised weights."""
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def initialise(module):
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.weight)
            nn.init.constant_(module.bias, 0.5)

    model.apply(initialise)
    predict = kiln.compile(model.eval())
    np.testing.assert_allclose(predict(np.ones((3, 4), np.float32)), np.full((3, 2), 0.5), rtol=1e-6)


def test_torchs_private_fan_helpers_that_reference_code_calls():
    """``nn.init._calculate_fan_in_and_fan_out(weight)`` (a custom layer's ``reset_parameters`` copied from
    ``nn.Linear``, siren's ``hyper_bias_init``) and ``_calculate_correct_fan(weight, mode)``, on Parameters and
    tensors, as torch's; fewer than 2 dims and an unknown mode refused with torch's ValueError; a mode in capitals
    accepted by the kaiming initialisers, as torch's."""
    torch = require("torch")
    for shape in SHAPES:
        expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
        assert nn.init._calculate_fan_in_and_fan_out(nn.Parameter(np.zeros(shape, np.float32))) == expected
        assert nn.init._calculate_fan_in_and_fan_out(kiln.zeros(*shape)) == expected
        for mode in ("fan_in", "fan_out", "FAN_OUT"):
            assert nn.init._calculate_correct_fan(kiln.zeros(*shape), mode) == torch.nn.init._calculate_correct_fan(
                torch.empty(shape), mode)
    for module in (nn.init, torch.nn.init):
        zeros = kiln.zeros if module is nn.init else torch.zeros
        with pytest.raises(ValueError):
            module._calculate_fan_in_and_fan_out(zeros(5))
        with pytest.raises(ValueError):
            module._calculate_correct_fan(zeros(3, 4), "fan_avg")
    weight = nn.Parameter(np.zeros((64, 32), np.float32))
    nn.init.kaiming_uniform_(weight, mode="FAN_IN", nonlinearity="relu")
    assert 0.9 * math.sqrt(6 / 32) < np.abs(weight.data).max() <= math.sqrt(6 / 32)
