"""``F.pad`` in constant mode with negative pads (PyTorch crops) and the layers built on it (``ConstantPad*d``,
``ZeroPad*d``) against PyTorch: values and input gradients in float64 (rtol 1e-10) and float32, a symbolic batch dim
left alone, the ops it traces to; and the errors: a crop past the dim, a pad of a symbolic dim, and a ``value`` given
to a mode that fills from the edges (PyTorch refuses it too)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import KilnError
from layer_parity import assert_layer_matches_torch
from oracles import require

TOLERANCES = {"float64": {"rtol": 1e-10, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}

CROPS = {
    "crop_left_pad_right": ((2, 3, 7), (-1, 2)),
    "pad_left_crop_right": ((2, 3, 7), (2, -1)),
    "crop_both_sides": ((2, 3, 7), (-2, -3)),
    "crop_to_empty": ((2, 3, 5), (-2, -3)),
    "crop_all_then_pad": ((2, 3, 4), (-4, 1)),
    "two_axes_mixed": ((2, 3, 5, 6), (-1, 2, -1, 0)),
    "crop_an_inner_axis_only": ((2, 3, 5, 6), (0, 0, -2, -1)),
    "three_axes": ((2, 3, 4, 5, 6), (1, -3, 2, -2, -1, 1)),
    "every_axis": ((3, 4, 5), (-1, 1, 1, -2, -1, 0)),
}


def normal(*shape, dtype="float64", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_pad_matches_torch(pad, x, value=None):
    """``F.pad(x, pad, value=value)`` traced and run on NumPy against PyTorch: the value, and the gradient of
    ``sum(output * weights)`` (random weights, so a misplaced cell shows)."""
    torch = require("torch")
    tensor = torch.tensor(x, requires_grad=True)
    expected = torch.nn.functional.pad(tensor, pad, value=value)
    weights = normal(*expected.shape, dtype=str(x.dtype), seed=5)
    (expected * torch.tensor(weights)).sum().backward()
    graph = kiln.trace(lambda t: F.pad(t, pad, value=value), kiln.TensorSpec(x.shape, str(x.dtype)))
    (got,) = NumpyBackend().compile(graph)(x)
    assert got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.detach().numpy(), err_msg="value", **TOLERANCES[str(x.dtype)])
    grad = kiln.grad(lambda t: (F.pad(t, pad, value=value) * weights).sum())(x)
    np.testing.assert_allclose(grad, tensor.grad.numpy(), err_msg="gradient", **TOLERANCES[str(x.dtype)])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(CROPS))
def test_negative_constant_pads_crop_as_torch(case, dtype):
    shape, pad = CROPS[case]
    assert_pad_matches_torch(pad, normal(*shape, dtype=dtype), value=None)
    assert_pad_matches_torch(pad, normal(*shape, dtype=dtype, seed=1), value=-2.5)


def test_the_fill_is_one_pad_and_each_cropped_axis_one_slice():
    graph = kiln.trace(lambda t: F.pad(t, (-1, 2, -2, -1), value=1.0), kiln.TensorSpec((2, 5, 6), "float64"))
    assert [op.name for op in graph.ops] == ["tensor.pad", "tensor.slice", "tensor.slice"]
    only_crops = kiln.trace(lambda t: F.pad(t, (-1, 0, 0, -2)), kiln.TensorSpec((2, 5, 6), "float64"))
    assert [op.name for op in only_crops.ops] == ["tensor.slice", "tensor.slice"]


def test_cropping_pads_keep_a_symbolic_batch_dim():
    torch = require("torch")
    pad = (-1, 2, 1, -2)
    graph = kiln.trace(lambda t: F.pad(t, pad, value=0.5), kiln.TensorSpec(("N", 3, 5, 6), "float64"))
    assert graph.outputs[0].type.shape == ("N", 3, 4, 7)
    run = NumpyBackend().compile(graph)
    for batch in (1, 4):
        x = normal(batch, 3, 5, 6, seed=batch)
        np.testing.assert_allclose(run(x)[0], torch.nn.functional.pad(torch.tensor(x), pad, value=0.5).numpy(), rtol=1e-10, atol=1e-12)


def _layer_pairs(torch):
    return [
        (nn.ConstantPad2d((-1, 2, 0, -3), 3.5), torch.nn.ConstantPad2d((-1, 2, 0, -3), 3.5), (2, 3, 5, 6)),
        (nn.ConstantPad2d(-1, -1.0), torch.nn.ConstantPad2d(-1, -1.0), (2, 3, 5, 6)),
        (nn.ZeroPad2d((2, -1, -2, 1)), torch.nn.ZeroPad2d((2, -1, -2, 1)), (2, 3, 5, 6)),
        (nn.ZeroPad2d(-2), torch.nn.ZeroPad2d(-2), (3, 5, 6)),
        (nn.ConstantPad1d((-2, 1), 0.25), torch.nn.ConstantPad1d((-2, 1), 0.25), (2, 3, 5)),
        (nn.ZeroPad3d((1, -1, -1, 0, 0, -2)), torch.nn.ZeroPad3d((1, -1, -1, 0, 0, -2)), (1, 2, 3, 4, 5)),
    ]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_constant_and_zero_pad_layers_crop_as_torch(dtype):
    torch = require("torch")
    for index, (module, reference, shape) in enumerate(_layer_pairs(torch)):
        x = normal(*shape, dtype=dtype, seed=index)
        assert_layer_matches_torch(torch, module, reference.double() if dtype == "float64" else reference, [x], **TOLERANCES[dtype])


def test_a_training_step_through_a_cropping_pad_matches_torch():
    """A crop on the batch-free axes of a conv's output, with a symbolic batch dim, trained by SGD against PyTorch."""
    torch = require("torch")
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ZeroPad2d((-1, 1, 2, -2)), nn.Flatten(), nn.Linear(3 * 5 * 5, 4))
    reference = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ZeroPad2d((-1, 1, 2, -2)), torch.nn.Flatten(),
                                    torch.nn.Linear(3 * 5 * 5, 4))
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    torch_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    for batch in (4, 3, 4):
        x, y = rng.standard_normal((batch, 2, 5, 5)).astype(np.float32), rng.integers(0, 4, batch)
        loss = step(x, y)
        torch_optimizer.zero_grad()
        expected = torch.nn.functional.cross_entropy(reference(torch.tensor(x)), torch.tensor(y))
        expected.backward()
        torch_optimizer.step()
        np.testing.assert_allclose(float(loss), expected.item(), rtol=1e-5)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, reference.state_dict()[name].numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_a_value_with_an_edge_mode_is_refused_as_torch_refuses_it(mode):
    torch = require("torch")
    x = normal(2, 3, 5)
    with pytest.raises(RuntimeError, match="doesn't take in value"):
        torch.nn.functional.pad(torch.tensor(x), (1, 2), mode=mode, value=1.0)
    with pytest.raises(KilnError, match=f"pad\\(mode='{mode}'\\) fills from the input's edges and takes no value, got value=1.0; drop value"):
        kiln.trace(lambda t: F.pad(t, (1, 2), mode, 1.0), kiln.TensorSpec(x.shape, "float64"))
    for value in (None, 0.0):  # PyTorch accepts a zero value, the default of older releases
        graph = kiln.trace(lambda t: F.pad(t, (1, 2), mode, value), kiln.TensorSpec(x.shape, "float64"))
        expected = torch.nn.functional.pad(torch.tensor(x), (1, 2), mode=mode, value=value).numpy()
        np.testing.assert_allclose(NumpyBackend().compile(graph)(x)[0], expected, rtol=1e-12)


BAD_PADS = [
    ((-3, -3), (2, 3, 5), "crops more than the 5 elements of dim 2"),
    ((-6, 1), (2, 3, 5), "crops more than the 5 elements of dim 2"),
    ((1, 1, 1), (2, 3, 5), "must be \\(before, after\\) pairs"),
    ((1, 1) * 4, (2, 3, 5), "at most the 3 dims"),
    ((0, 0, 0, 0, -1, 0), ("N", 3, 5), "symbolic dim N"),
    ((0, 0, 0, 0, 1, 0), ("N", 3, 5), "symbolic dim N"),
]


@pytest.mark.parametrize(("pad", "shape", "message"), BAD_PADS, ids=[str(pad) for pad, _, _ in BAD_PADS])
def test_bad_constant_pads_say_what_is_wrong(pad, shape, message):
    with pytest.raises(KilnError, match=message):
        kiln.trace(lambda t: F.pad(t, pad), kiln.TensorSpec(shape))


def test_a_cropping_pad_exports_to_onnx_with_a_symbolic_batch_dim(tmp_path):
    torch, ort = require("torch"), require("onnxruntime")
    pad = (2, -1, -2, 1)
    path = str(tmp_path / "crop.onnx")
    kiln.export_onnx(lambda t: F.pad(t, pad, value=-1.0), [kiln.TensorSpec(("N", 3, 5, 6))], path)
    session = ort.InferenceSession(path)
    for batch in (1, 3):
        x = normal(batch, 3, 5, 6, dtype="float32", seed=batch)
        expected = torch.nn.functional.pad(torch.tensor(x), pad, value=-1.0).numpy()
        np.testing.assert_array_equal(session.run(None, {session.get_inputs()[0].name: x})[0], expected)
