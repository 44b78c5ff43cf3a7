"""Unbatched inputs of ``F.conv1d`` (``(C, L)``), ``F.conv_transpose2d``, ``F.adaptive_avg_pool2d`` and
``F.adaptive_max_pool2d`` (``(C, H, W)``) and their layers, as torch 2.13 takes them (kiln refused them; the other
convolutions and pools took them already): values, weight, bias and input gradients in float64, eagerly and compiled,
equal to the batched call's first sample; the pools' indices too."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

LAYERS = {
    "Conv1d": (lambda nn: nn.Conv1d(3, 4, 3, stride=2, padding=1), (3, 9)),
    "Conv1d_same": (lambda nn: nn.Conv1d(3, 4, 4, padding="same", dilation=2), (3, 9)),
    "ConvTranspose2d": (lambda nn: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), (3, 4, 5)),
    "ConvTranspose2d_groups": (lambda nn: nn.ConvTranspose2d(4, 6, (2, 3), stride=(1, 2), groups=2, dilation=2), (4, 3, 4)),
    "AdaptiveAvgPool2d_tiles": (lambda nn: nn.AdaptiveAvgPool2d((3, 5)), (3, 6, 5)),
    "AdaptiveAvgPool2d_uneven": (lambda nn: nn.AdaptiveAvgPool2d((4, None)), (3, 6, 5)),
    "AdaptiveAvgPool2d_global": (lambda nn: nn.AdaptiveAvgPool2d(1), (3, 6, 5)),
    "AdaptiveMaxPool2d": (lambda nn: nn.AdaptiveMaxPool2d((4, 3)), (3, 6, 5)),
}


def run(name, case, state=None, compiled=False):
    lib, nn, _ = libraries(name)
    make, shape = LAYERS[case]
    layer = make(nn)
    if state is not None:
        layer.load_state_dict({key: lib.tensor(value) for key, value in state.items()})
    x = lib.tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)
    out = (kiln.compile(layer, fullgraph=True) if compiled else layer)(x)
    (out * out).sum().backward()
    state = {key: np.array(value.detach().numpy()) for key, value in layer.state_dict().items()}
    grads = [np.array(p.grad.numpy()) for p in layer.parameters()]
    batched = np.array(layer(x.detach()[None]).detach().numpy())[0]
    return np.array(out.detach().numpy()), grads, np.array(x.grad.numpy()), batched, state


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_unbatched_convolution_as_torch(case, compiled, float64_default):
    kiln.manual_seed(0)
    ours = run("kiln", case, compiled=compiled)
    theirs = run("torch", case, state=ours[4])
    assert ours[0].shape == theirs[0].shape and ours[0].ndim == len(LAYERS[case][1])
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours[0], ours[3], rtol=1e-12, atol=1e-14)
    for mine, torch_grad in zip(ours[1] + [ours[2]], theirs[1] + [theirs[2]]):
        np.testing.assert_allclose(mine, torch_grad, rtol=1e-10, atol=1e-12)


def test_unbatched_adaptive_max_pool2d_indices_as_torch():
    x = np.random.default_rng(1).standard_normal((3, 6, 5))
    results = []
    for name in ("kiln", "torch"):
        lib, _, F = libraries(name)
        values, indices = F.adaptive_max_pool2d(lib.tensor(x), (4, 3), return_indices=True)
        results.append((np.array(values.numpy()), np.array(indices.numpy())))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
