"""``nn.ConvTranspose{1,2,3}d.forward(input, output_size)``: the requested size (spatial dims, or with the batch and
channel dims; a U-Net's ``upconv(x, output_size=skip.size()[2:])``) picks this call's output padding, as PyTorch's
``_output_padding``; a size out of range or of the wrong length is refused with torch's message. Checked against torch
2.13 in float64 (values, parameter gradients), eagerly and under ``kiln.compile``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

INPUTS = {1: (2, 3, 4), 2: (2, 3, 4, 3), 3: (2, 3, 3, 4, 2)}


def layer_and_input(lib, nn, spatial_dims, state=None):
    """A stride-2 ConvTranspose (kernel 3, padding 1: sizes 2 in - 1 or 2 in reachable) and its input."""
    layer = getattr(nn, f"ConvTranspose{spatial_dims}d")(3, 4, kernel_size=3, stride=2, padding=1)
    if state is not None:
        layer.load_state_dict({key: lib.tensor(value) for key, value in state.items()})
    x = np.random.default_rng(spatial_dims).standard_normal(INPUTS[spatial_dims])
    return layer, lib.tensor(x)


def run(name, spatial_dims, output_size, state=None, compiled=False):
    lib, nn, _ = libraries(name)
    layer, x = layer_and_input(lib, nn, spatial_dims, state)
    forward = kiln.compile(layer, fullgraph=True) if compiled else layer
    out = forward(x, output_size=output_size)
    (out * out).sum().backward()
    state = {key: np.array(value.detach().numpy()) for key, value in layer.state_dict().items()}
    return np.array(out.detach().numpy()), np.array(layer.weight.grad.numpy()), state


def even_size(spatial_dims, with_leading=False):
    """Twice the input's spatial size (the largest reachable: output padding 1 on each dim)."""
    size = [2 * n for n in INPUTS[spatial_dims][2:]]
    return [INPUTS[spatial_dims][0], 4] + size if with_leading else size


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("with_leading", [False, True], ids=["spatial", "full"])
@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_output_size_picks_the_output_padding_as_torch(spatial_dims, with_leading, compiled, float64_default):
    kiln.manual_seed(0)
    size = even_size(spatial_dims, with_leading)
    ours = run("kiln", spatial_dims, size, compiled=compiled)
    theirs = run("torch", spatial_dims, size, state=ours[2])
    assert ours[0].shape == theirs[0].shape and list(theirs[0].shape[2:]) == even_size(spatial_dims)
    for mine, torch_value in zip(ours[:2], theirs[:2]):
        np.testing.assert_allclose(mine, torch_value, rtol=1e-10, atol=1e-12)


def test_output_size_as_a_torch_size_of_the_skip(float64_default):
    """The U-Net idiom: the skip connection's ``size()[2:]`` (odd here: no output padding)."""
    kiln.manual_seed(0)
    layer, x = layer_and_input(kiln, kiln.nn, 2)
    skip = kiln.zeros(2, 4, 7, 5)
    assert tuple(layer(x, output_size=skip.size()[2:]).shape) == (2, 4, 7, 5) == tuple(layer(x).shape)


@pytest.mark.parametrize("output_size", [[9, 6], [6, 6], [2, 3, 8, 6, 1]])
def test_output_size_out_of_range_is_refused_as_torch(output_size):
    messages = []
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        layer, x = layer_and_input(lib, nn, 2)
        with pytest.raises(ValueError) as error:
            layer(x.float(), output_size=output_size)
        messages.append(str(error.value).replace("torch.Size(", "").replace(")", ""))
    assert messages[0] == messages[1]
