"""The 3-D layers (``frontend/layers_conv3d.py``) against PyTorch in float64: ``Conv3d`` (stride, padding, "same",
dilation, groups, no bias), ``ConvTranspose3d`` (output_padding too), ``MaxPool3d`` (dilation, ceil_mode), ``AvgPool3d``, the adaptive pools at any output
size and ``BatchNorm3d``: outputs, parameter and input gradients to rtol 1e-10, reprs as PyTorch's. A 3-D CNN
trains in lockstep with PyTorch, runs at two batch sizes from one compile, and exports to ONNX (onnxruntime and the
reference evaluator agree); unbatched inputs, ``Dropout3d``'s channel structure and the refused options."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from layer_parity import assert_layer_matches_torch, normal, sgd_losses_in_lockstep
from oracles import require

VOLUME = (2, 4, 7, 6, 8)

CONVS = {
    "plain": ((4, 6, 3), {}),
    "strided_padded_dilated_grouped": ((4, 6, (2, 3, 1)), {"stride": (2, 1, 2), "padding": (1, 0, 1), "dilation": (2, 1, 1), "groups": 2}),
    "same_even_kernel_no_bias": ((4, 6, 4), {"padding": "same", "bias": False}),
    "depthwise": ((4, 4, 3), {"groups": 4, "padding": 1}),
}


@pytest.mark.parametrize("case", CONVS)
def test_conv3d_matches_torch(case):
    torch = require("torch")
    arguments, options = CONVS[case]
    ours, theirs = nn.Conv3d(*arguments, dtype="float64", **options), torch.nn.Conv3d(*arguments, dtype=torch.float64, **options)
    assert repr(ours) == repr(theirs)
    assert_layer_matches_torch(torch, ours, theirs, [normal(*VOLUME, dtype="float64")])


TRANSPOSED = {
    "plain": ((4, 6, 3), {}),
    "strided_output_padding_grouped": ((4, 6, (2, 3, 2)), {"stride": (2, 1, 2), "padding": (1, 0, 1), "output_padding": (1, 0, 1), "groups": 2}),
    "dilated_padded_no_bias": ((4, 2, 3), {"stride": 2, "dilation": (2, 1, 1), "padding": 2, "bias": False}),
    "output_padding_beyond_padding": ((4, 6, 2), {"stride": 3, "output_padding": 2}),
}


@pytest.mark.parametrize("case", TRANSPOSED)
def test_conv_transpose3d_matches_torch(case):
    torch = require("torch")
    arguments, options = TRANSPOSED[case]
    ours = nn.ConvTranspose3d(*arguments, dtype="float64", **options)
    theirs = torch.nn.ConvTranspose3d(*arguments, dtype=torch.float64, **options)
    assert repr(ours) == repr(theirs)
    assert_layer_matches_torch(torch, ours, theirs, [normal(2, 4, 3, 4, 5, dtype="float64")])


POOLS = {
    "max_default": ("MaxPool3d", (2,), {}),
    "max_padded": ("MaxPool3d", (3, 2, 1), {}),
    "max_dilated_ceil": ("MaxPool3d", ((3, 2, 2), (2, 1, 2), (1, 0, 1), (2, 1, 1)), {"ceil_mode": True}),
    "max_ceil": ("MaxPool3d", (3, 2, 1), {"ceil_mode": True}),
    "avg_default": ("AvgPool3d", (2,), {}),
    "avg_padded": ("AvgPool3d", ((3, 2, 2), (2, 1, 2), (1, 0, 1)), {}),
    "adaptive_avg_global": ("AdaptiveAvgPool3d", (1,), {}),
    "adaptive_avg_uneven": ("AdaptiveAvgPool3d", ((3, 4, 5),), {}),
    "adaptive_avg_keep_depth": ("AdaptiveAvgPool3d", ((None, 4, 3),), {}),
    "adaptive_max_global": ("AdaptiveMaxPool3d", (1,), {}),
    "adaptive_max_uneven": ("AdaptiveMaxPool3d", ((3, 4, 5),), {}),
    "adaptive_max_larger": ("AdaptiveMaxPool3d", ((9, 2, 8),), {}),
}


@pytest.mark.parametrize("case", POOLS)
def test_pools_match_torch(case):
    torch = require("torch")
    name, arguments, options = POOLS[case]
    ours, theirs = getattr(nn, name)(*arguments, **options), getattr(torch.nn, name)(*arguments, **options)
    assert repr(ours) == repr(theirs)
    assert_layer_matches_torch(torch, ours, theirs, [normal(*VOLUME, dtype="float64")])


def test_batch_norm3d_matches_torch_in_training_and_eval():
    torch = require("torch")
    ours, theirs = nn.BatchNorm3d(4, dtype="float64"), torch.nn.BatchNorm3d(4, dtype=torch.float64)
    assert_layer_matches_torch(torch, ours, theirs, [normal(*VOLUME, dtype="float64")])
    ours.eval(), theirs.eval()
    ours.running_mean.data[:] = np.arange(4.0)
    assert_layer_matches_torch(torch, ours, theirs, [normal(*VOLUME, dtype="float64", seed=3)])


def _cnn(library):
    return library.Sequential(
        library.Conv3d(2, 4, 3, padding=1), library.BatchNorm3d(4), library.ReLU(), library.MaxPool3d(2),
        library.ConvTranspose3d(4, 4, 2, stride=2), library.Conv3d(4, 6, (2, 3, 3), stride=2, groups=2), library.ReLU(),
        library.AdaptiveAvgPool3d(1), library.Flatten(),
        library.Linear(6, 3),
    )


def test_a_3d_cnn_trains_in_lockstep_with_torch():
    torch = require("torch")
    kiln.manual_seed(0)
    model, reference = _cnn(nn), _cnn(torch.nn)
    x, y = normal(4, 2, 6, 6, 6, seed=5), np.array([0, 2, 1, 2])
    losses = sgd_losses_in_lockstep(torch, model, reference, x, y, lr=0.1, steps=5)
    assert losses[-1] < losses[0]


def test_a_3d_cnn_takes_any_batch_and_exports_to_onnx(tmp_path):
    onnx, ort = require("onnx"), require("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    kiln.manual_seed(1)
    model = _cnn(nn).eval()
    path = str(tmp_path / "cnn3d.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 2, 6, 6, 6))], path)
    onnx.checker.check_model(proto, full_check=True)
    session, reference, predict = ort.InferenceSession(path), ReferenceEvaluator(proto), kiln.compile(model)
    for batch in (1, 3):
        x = normal(batch, 2, 6, 6, 6, seed=batch)
        expected = predict(x)
        assert expected.shape == (batch, 3)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(reference.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5)


def test_unbatched_volumes_and_channel_dropout():
    torch = require("torch")
    conv = nn.Conv3d(4, 2, 3, dtype="float64")
    twin = torch.nn.Conv3d(4, 2, 3, dtype=torch.float64)
    twin.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in conv.state_dict().items()})
    x = normal(*VOLUME[1:], dtype="float64")
    np.testing.assert_allclose(kiln.compile(conv, batch_dim=None)(x), twin(torch.tensor(x)).detach().numpy(), rtol=1e-10)
    dropout = nn.Dropout3d(0.5)
    graph = kiln.trace(dropout, kiln.TensorSpec(VOLUME))
    dropped = kiln.backends.numpy.NumpyBackend().compile(graph)(np.ones(VOLUME, np.float32), np.int64(7))[0]
    per_channel = dropped.reshape(VOLUME[0] * VOLUME[1], -1)
    assert all(len(set(row)) == 1 for row in per_channel) and {0.0, 2.0} == set(per_channel[:, 0])


@pytest.mark.parametrize(("make", "message"), [
    (lambda: nn.Conv3d(2, 2, 3, padding_mode="mirror"), "padding_mode must be one of"),
])
def test_refused_constructor_options(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(("layer", "message"), [
    (nn.Conv3d(2, 2, 3, stride=2, padding="same"), "padding='same' needs stride 1"),
])
def test_refused_options_name_the_users_line(layer, message):
    with pytest.raises(kiln.TraceError, match=message):
        kiln.trace(layer, kiln.TensorSpec((1, 2, 5, 5, 5)))
