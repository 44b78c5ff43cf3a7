"""``Conv1d/2d/3d._conv_forward(input, weight, bias)``: ``forward`` goes through it, as PyTorch's does, so a subclass
that overrides it to transform the weight (Whisper's ``Conv1d`` casting it to ``x.dtype``, weight standardization)
runs its override. Checked against torch 2.13 in float64 (values, parameter gradients)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

SHAPES = {"Conv1d": (2, 3, 7), "Conv2d": (2, 3, 5, 6), "Conv3d": (2, 3, 4, 5, 3)}


def standardized_conv(nn, layer_name):
    """A convolution whose ``_conv_forward`` standardizes the weight per output channel (BiT's ``StdConv2d``)."""
    class StandardizedConv(getattr(nn, layer_name)):
        def _conv_forward(self, x, weight, bias):
            flat = weight.reshape(weight.shape[0], -1)
            mean, var = flat.mean(dim=1), flat.var(dim=1, unbiased=False)
            shape = (-1,) + (1,) * (weight.dim() - 1)
            weight = (weight - mean.reshape(shape)) / (var.reshape(shape) + 1e-5).sqrt()
            return super()._conv_forward(x, weight, bias)

    return StandardizedConv(3, 4, kernel_size=3, padding=1)


@pytest.mark.parametrize("layer_name", list(SHAPES))
def test_overridden_conv_forward_runs_as_torch(layer_name, float64_default):
    kiln.manual_seed(0)
    x = np.random.default_rng(0).standard_normal(SHAPES[layer_name])
    records = []
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        layer = standardized_conv(nn, layer_name)
        if records:
            layer.load_state_dict({key: lib.tensor(value) for key, value in records[0][2].items()})
        out = layer(lib.tensor(x))
        (out * out).sum().backward()
        state = {key: np.array(value.detach().numpy()) for key, value in layer.state_dict().items()}
        records.append((out.detach().numpy(), layer.weight.grad.numpy(), state))
    for ours, theirs in zip(records[0][:2], records[1][:2]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_whisper_conv1d_casts_its_weight_to_the_input_dtype():
    """Whisper's ``Conv1d`` (float32 weights, a float16 mel): the override casts weight and bias to ``x.dtype``; before,
    kiln's ``forward`` called ``F.conv1d`` itself and refused the mixed dtypes."""
    torch = require_torch()
    outputs = []
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)

        class Conv1d(nn.Conv1d):
            def _conv_forward(self, x, weight, bias):
                return super()._conv_forward(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

        kiln.manual_seed(0)
        layer = Conv1d(3, 4, kernel_size=3, padding=1)
        if outputs:
            layer.load_state_dict({key: torch.tensor(value) for key, value in outputs[0][1].items()})
        mel = lib.tensor(np.linspace(-1, 1, 2 * 3 * 6).reshape(2, 3, 6)).half()
        out = layer(mel)
        assert out.dtype == lib.float16
        outputs.append((np.array(out.detach().float().numpy()), {k: np.array(v.numpy()) for k, v in layer.state_dict().items()}))
    np.testing.assert_allclose(outputs[0][0], outputs[1][0], rtol=2e-3, atol=2e-3)
