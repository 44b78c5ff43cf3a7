"""``F.max_pool3d(..., return_indices=True)``, ``F.max_pool3d_with_indices`` and ``nn.MaxPool3d(return_indices=True)``
against PyTorch 2.13 in float64: values, int64 flat indices ``(d H + h) W + w`` and input gradients, with stride,
padding, dilation, ceil_mode (partial last windows), ties (the first largest in the window), -inf windows and an
unbatched volume; then ``F.max_unpool3d``/``nn.MaxUnpool3d`` of those indices (an output_size too), the round trip's
values and gradients, and the 3-D pool's ONNX export in onnxruntime and the reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from oracles import require

CASES = [
    dict(kernel_size=2),
    dict(kernel_size=(2, 3, 2), stride=(1, 2, 1)),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2, 3), stride=2, padding=(1, 0, 1), ceil_mode=True),
    dict(kernel_size=2, stride=1, dilation=(2, 1, 2)),
    dict(kernel_size=3, stride=3, ceil_mode=True, dilation=1, padding=(0, 1, 1)),
]


def volume_with_ties(shape, seed: int) -> np.ndarray:
    """Values on a grid of 0.5 (ties in most windows), one plane of -inf."""
    x = np.round(np.random.default_rng(seed).standard_normal(shape) * 2) / 2
    x[..., 0, :, :] = np.where(np.random.default_rng(seed).random(x[..., 0, :, :].shape) < 0.5, -np.inf, x[..., 0, :, :])
    return x


def kiln_values_indices_gradient(x, w, **options):
    def pooled(t):
        return F.max_pool3d(t, return_indices=True, **options)

    values, indices = kiln.compile(pooled, batch_dim=None)(x)
    gradient = kiln.compile(lambda t: kiln.grad(lambda s: (pooled(s)[0] * kiln.tensor(w)).sum())(t), batch_dim=None)(x)
    return values, indices, gradient


def torch_values_indices_gradient(torch, x, w, **options):
    tensor = torch.tensor(x, requires_grad=True)
    values, indices = torch.nn.functional.max_pool3d(tensor, return_indices=True, **options)
    (values * torch.tensor(w)).sum().backward()
    return values.detach().numpy(), indices.numpy(), tensor.grad.numpy()


@pytest.mark.parametrize("options", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("shape", [(2, 3, 5, 6, 7), (2, 4, 6, 5)], ids=["batched", "unbatched"])
def test_values_indices_and_gradients_match_torch(shape, options):
    torch = require("torch")
    x = volume_with_ties(shape, len(options))
    probe = torch.nn.functional.max_pool3d(torch.tensor(x), **options)
    w = np.random.default_rng(3).standard_normal(probe.shape)
    got, expected = kiln_values_indices_gradient(x, w, **options), torch_values_indices_gradient(torch, x, w, **options)
    np.testing.assert_array_equal(got[0], expected[0])
    assert got[1].dtype == np.int64
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-15, atol=0)


def test_the_module_and_the_with_indices_name_agree_with_the_function():
    x = volume_with_ties((1, 2, 4, 4, 4), 7)
    module = nn.MaxPool3d(2, stride=1, return_indices=True)
    values, indices = kiln.compile(module, batch_dim=None)(x)
    named = kiln.compile(lambda t: F.max_pool3d_with_indices(t, 2, 1), batch_dim=None)(x)
    plain = kiln.compile(lambda t: F.max_pool3d(t, 2, 1), batch_dim=None)(x)
    np.testing.assert_array_equal(values, named[0])
    np.testing.assert_array_equal(indices, named[1])
    np.testing.assert_array_equal(values, plain)


@pytest.mark.parametrize(("options", "output_size"), [(dict(kernel_size=2), (5, 7, 6)), (dict(kernel_size=3, stride=2, padding=1), (5, 7, 6)),
                                                       (dict(kernel_size=(2, 3, 2), stride=(2, 2, 1)), None)])
def test_max_unpool3d_of_the_indices_matches_torch(options, output_size):
    torch = require("torch")
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 7, 6))  # distinct values: unpooling's writes do not collide
    unpool_options = {k: v for k, v in options.items() if k in ("kernel_size", "stride", "padding")}

    def round_trip(t, library, unpool):
        values, indices = library.max_pool3d(t, return_indices=True, **options)
        return unpool(values, indices, output_size=output_size)

    layer = nn.MaxUnpool3d(**unpool_options)
    got = kiln.compile(lambda t: round_trip(t, F, layer), batch_dim=None)(x)
    tensor = torch.tensor(x, requires_grad=True)
    expected = round_trip(tensor, torch.nn.functional, torch.nn.MaxUnpool3d(**unpool_options))
    np.testing.assert_array_equal(got, expected.detach().numpy())
    w = np.random.default_rng(4).standard_normal(expected.shape)
    (expected * torch.tensor(w)).sum().backward()
    gradient = kiln.compile(lambda t: kiln.grad(lambda s: (round_trip(s, F, layer) * kiln.tensor(w)).sum())(t),
                            batch_dim=None)(x)
    np.testing.assert_allclose(gradient, tensor.grad.numpy(), rtol=1e-15, atol=0)


def test_values_and_indices_export_to_onnx():
    from onnx_nodes import exported_sessions

    graph = kiln.trace(lambda t: F.max_pool3d(t, 3, 2, 1, return_indices=True), kiln.TensorSpec(("N", 2, 5, 6, 5), "float64"))
    _, names, oracles = exported_sessions(graph)
    x = volume_with_ties((3, 2, 5, 6, 5), 1)
    expected = kiln.compile(lambda t: F.max_pool3d(t, 3, 2, 1, return_indices=True), batch_dim=None)(x)
    for oracle, session in oracles.items():
        for got, want in zip(session.run(None, {names[0]: x}), expected):
            np.testing.assert_array_equal(got, want, err_msg=oracle)


def test_refusals_name_the_users_line():
    with pytest.raises(kiln.TraceError, match=r"(?s)test_max_pool3d_indices.py:\d+.*padding .* must be at most half"):
        kiln.trace(lambda t: F.max_pool3d(t, 2, padding=2, return_indices=True), kiln.TensorSpec((1, 1, 6, 6, 6)))
