"""The spatial functions and layers (``frontend/functional_spatial.py``, ``frontend/layers_spatial.py``) against PyTorch:
values and input (and parameter) gradients in float32 (rtol 1e-5) and float64 (rtol 1e-10) over grids of modes, sizes,
scale factors, pads and window geometries; channel dropout's statistics; a symbolic batch dim; a compiled training step
and ONNX export; and the errors for bad arguments."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import KilnError
from kiln.compiler.passes.decompose import Decompose
from layer_parity import assert_layer_matches_torch, sgd_losses_in_lockstep
from oracles import require

DTYPES = ["float32", "float64"]


def normal(*shape, dtype="float64", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def tolerances(dtype):
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == "float64" else {"rtol": 1e-5, "atol": 1e-6}


def assert_function_matches_torch(ours, theirs, *arrays, dtype=None):
    """``ours(*tensors)`` traced and run on NumPy against ``theirs(*torch tensors)``: the value, and the gradient of
    ``sum(output * weights)`` in every input (random weights, so a misplaced cell shows)."""
    torch = require("torch")
    dtype = dtype or str(arrays[0].dtype)
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    expected = theirs(*tensors)
    weights = normal(*expected.shape, dtype=dtype, seed=5)
    (expected * torch.tensor(weights)).sum().backward()
    graph = kiln.trace(ours, *[kiln.TensorSpec(a.shape, str(a.dtype)) for a in arrays])
    (value,) = NumpyBackend().compile(graph)(*arrays)
    np.testing.assert_allclose(value, expected.detach().numpy(), err_msg="value", **tolerances(dtype))
    grads = kiln.grad(lambda *xs: (ours(*xs) * weights).sum(), argnums=tuple(range(len(arrays))))(*arrays)
    for index, (got, tensor) in enumerate(zip(grads if isinstance(grads, tuple) else (grads,), tensors)):
        np.testing.assert_allclose(got, tensor.grad.numpy(), err_msg=f"gradient of input {index}", **tolerances(dtype))


# Padding from the edges ----------------------------------------------------------------------------------------------

PAD_CASES = {
    "1d_of_NCL": ((2, 3, 7), (2, 3)),
    "1d_left_only": ((2, 3, 7), (4, 0)),
    "1d_crop_left": ((2, 3, 7), (-2, 3)),
    "1d_crop_right": ((2, 3, 7), (3, -1)),
    "1d_of_CL": ((3, 7), (1, 2)),
    "2d_of_NCHW": ((2, 2, 5, 6), (1, 2, 3, 0)),
    "2d_of_CHW": ((2, 5, 6), (2, 2, 1, 1)),
    "2d_top_only": ((2, 2, 5, 6), (0, 0, 4, 0)),
    "3d_of_NCDHW": ((1, 2, 3, 4, 5), (1, 0, 2, 1, 1, 2)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("case", sorted(PAD_CASES))
def test_edge_pads_match_torch(case, mode, dtype):
    torch = require("torch")
    shape, pad = PAD_CASES[case]
    x = normal(*shape, dtype=dtype)
    assert_function_matches_torch(lambda t: F.pad(t, pad, mode), lambda t: torch.nn.functional.pad(t, pad, mode), x)


def test_edge_pads_with_crops_on_two_axes_match_torch():
    """Reflect and replicate with a negative pad on each of two axes (PyTorch's circular mode fails on some of these)."""
    torch = require("torch")
    for mode in ("reflect", "replicate"):
        pad = (-1, 2, 3, -2)
        assert_function_matches_torch(lambda x: F.pad(x, pad, mode), lambda x: torch.nn.functional.pad(x, pad, mode), normal(2, 3, 5, 7))


# Interpolation --------------------------------------------------------------------------------------------------------

SIZINGS = {
    "scale_2": {"scale_factor": 2},
    "scale_1.7": {"scale_factor": 1.7},  # 1/1.7 differs from in/out = 5/8: PyTorch uses the former
    "scale_down_up": {"scale_factor": (0.6, 2.3)},
    "scale_recomputed": {"scale_factor": 1.7, "recompute_scale_factor": True},
    "odd_size": {"size": (3, 11)},
    "same_height": {"size": (5, 4)},
}
MODES_2D = [("nearest", None), ("nearest-exact", None), ("bilinear", False), ("bilinear", True), ("area", None)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("mode", "align_corners"), MODES_2D)
@pytest.mark.parametrize("sizing", sorted(SIZINGS))
def test_interpolate_2d_matches_torch(sizing, mode, align_corners, dtype):
    torch = require("torch")
    options = dict(SIZINGS[sizing], mode=mode, align_corners=align_corners)
    if mode == "area" and "scale_factor" in options:
        options["recompute_scale_factor"] = None  # PyTorch recomputes for area by itself
    assert_function_matches_torch(lambda x: F.interpolate(x, **options), lambda x: torch.nn.functional.interpolate(x, **options),
                                  normal(2, 3, 5, 7, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("mode", "align_corners"), [("nearest", None), ("nearest-exact", None), ("linear", False), ("linear", True),
                                                     ("area", None)])
@pytest.mark.parametrize("sizing", [{"scale_factor": 2.5}, {"scale_factor": 0.45}, {"size": 13}, {"size": 1}])
def test_interpolate_1d_matches_torch(sizing, mode, align_corners, dtype):
    torch = require("torch")
    options = dict(sizing, mode=mode, align_corners=align_corners)
    assert_function_matches_torch(lambda x: F.interpolate(x, **options), lambda x: torch.nn.functional.interpolate(x, **options),
                                  normal(2, 3, 6, dtype=dtype))


@pytest.mark.parametrize(("mode", "align_corners"), [("nearest", None), ("trilinear", False), ("trilinear", True)])
def test_interpolate_3d_matches_torch(mode, align_corners):
    torch = require("torch")
    options = {"scale_factor": (1.5, 0.7, 2.0), "mode": mode, "align_corners": align_corners}
    assert_function_matches_torch(lambda x: F.interpolate(x, **options), lambda x: torch.nn.functional.interpolate(x, **options),
                                  normal(1, 2, 3, 4, 5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizing", [{"size": (2, 5, 3)}, {"scale_factor": (0.6, 1.3, 2.2)}, {"size": 1}])
def test_interpolate_3d_area_matches_torch(sizing, dtype):
    """``area`` on a volume is ``adaptive_avg_pool3d`` (kiln refused 5-D inputs before)."""
    torch = require("torch")
    options = dict(sizing, mode="area")
    assert_function_matches_torch(lambda x: F.interpolate(x, **options), lambda x: torch.nn.functional.interpolate(x, **options),
                                  normal(2, 2, 3, 5, 4, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_interpolate_source_indices_match_torch_over_many_sizes_and_scale_factors(rank, dtype):
    """Every mode's index arithmetic (float32 rounding, the 2-D kernel's shortcuts for kept and doubled sizes, the
    clamps) over lengths resized to sizes and by factors, up and down, along the last of ``rank`` spatial axes: an
    arange input shows the chosen cells and weights."""
    torch = require("torch")
    cases = [{"size": out} for out in (1, 2, 3, 4, 6, 7, 9, 10, 14, 17)]
    cases += [{"scale_factor": s} for s in (0.3, 0.5, 0.7, 1.1, 1.3, 2.0, 2.1, 2.9, 3.3)]
    linear = {1: "linear", 2: "bilinear", 3: "trilinear"}[rank]
    modes = [("nearest", None), ("nearest-exact", None), (linear, False), (linear, True)]
    for sizing, (mode, align_corners) in itertools.product(cases, modes):
        options = {key: (1,) * (rank - 1) + (value,) for key, value in sizing.items()}
        options.update(mode=mode, align_corners=align_corners)
        lengths = [n for n in (1, 2, 3, 5, 7, 9) if n * sizing.get("scale_factor", 1) >= 1]
        xs = [np.arange(n, dtype=dtype).reshape((1, 1) + (1,) * (rank - 1) + (n,)) * 1.25 + 0.5 for n in lengths]
        graph = kiln.trace(lambda *ts: tuple(F.interpolate(t, **options) for t in ts), *[kiln.TensorSpec(x.shape, dtype) for x in xs])
        for x, value in zip(xs, NumpyBackend().compile(graph)(*xs)):
            expected = torch.nn.functional.interpolate(torch.tensor(x), **options).numpy()
            np.testing.assert_allclose(value, expected, err_msg=f"length {x.shape[-1]}, {options}", **tolerances(dtype))


def test_interpolate_keeps_a_symbolic_batch_dim():
    torch = require("torch")
    graph = kiln.trace(lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"), kiln.TensorSpec(("N", 2, 4, 4), "float64"))
    assert graph.outputs[0].type.shape == ("N", 2, 6, 6)
    run = NumpyBackend().compile(graph)
    for batch in (1, 3):
        x = normal(batch, 2, 4, 4, seed=batch)
        expected = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=1.5, mode="bilinear").numpy()
        np.testing.assert_allclose(run(x)[0], expected, rtol=1e-10, atol=1e-12)


# Pixel and channel shuffles -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "factor"), [((2, 8, 3, 4), 2), ((2, 9, 2, 3), 3), ((3, 2, 4, 2, 3), 2), ((4, 2, 3), 1)])
def test_pixel_shuffle_and_unshuffle_match_torch(shape, factor, dtype):
    torch = require("torch")
    x = normal(*shape, dtype=dtype)
    assert_function_matches_torch(lambda t: F.pixel_shuffle(t, factor), lambda t: torch.nn.functional.pixel_shuffle(t, factor), x)
    shuffled = torch.nn.functional.pixel_shuffle(torch.tensor(x), factor).numpy()
    assert_function_matches_torch(lambda t: F.pixel_unshuffle(t, factor), lambda t: torch.nn.functional.pixel_unshuffle(t, factor),
                                  shuffled)


@pytest.mark.parametrize(("shape", "groups"), [((2, 6, 3, 4), 2), ((2, 6, 5), 3), ((1, 4, 2, 2, 2), 4)])
def test_channel_shuffle_matches_torch(shape, groups):
    torch = require("torch")
    assert_function_matches_torch(lambda t: F.channel_shuffle(t, groups), lambda t: torch.nn.functional.channel_shuffle(t, groups),
                                  normal(*shape))


# Unfold and fold ------------------------------------------------------------------------------------------------------

WINDOWS = [
    {"kernel_size": k, "stride": s, "padding": p, "dilation": d}
    for k, s, p, d in itertools.product((2, (3, 2)), (1, (2, 1)), (0, (1, 2)), (1, (1, 2)))
]


@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_unfold_and_fold_match_torch_float64(window):
    """Overlapping windows (stride below the kernel), strides, zero padding and dilation; fold sums the overlaps."""
    torch = require("torch")
    x = normal(2, 3, 6, 7)
    assert_function_matches_torch(lambda t: F.unfold(t, **window), lambda t: torch.nn.functional.unfold(t, **window), x)
    columns = normal(*torch.nn.functional.unfold(torch.tensor(x), **window).shape, seed=3)
    assert_function_matches_torch(lambda t: F.fold(t, (6, 7), **window), lambda t: torch.nn.functional.fold(t, (6, 7), **window), columns)


@pytest.mark.parametrize("batched", [True, False])
def test_unfold_and_fold_match_torch_float32(batched):
    torch = require("torch")
    window = {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 1}
    x = normal(*((2, 3, 7, 5) if batched else (3, 7, 5)), dtype="float32")
    assert_function_matches_torch(lambda t: F.unfold(t, **window), lambda t: torch.nn.functional.unfold(t, **window), x)
    columns = normal(*torch.nn.functional.unfold(torch.tensor(x), **window).shape, dtype="float32", seed=3)
    assert_function_matches_torch(lambda t: F.fold(t, (7, 5), **window), lambda t: torch.nn.functional.fold(t, (7, 5), **window), columns)


def test_fold_of_unfold_counts_each_cell_once_per_window_that_covers_it():
    x = np.ones((1, 1, 4, 5))
    graph = kiln.trace(lambda t: F.fold(F.unfold(t, 3, padding=1), (4, 5), 3, padding=1), kiln.TensorSpec(x.shape, "float64"))
    (counts,) = NumpyBackend().compile(graph)(x)
    rows, columns = np.array([2, 3, 3, 2]), np.array([2, 3, 3, 3, 2])
    np.testing.assert_array_equal(counts[0, 0], np.outer(rows, columns))


def test_unfold_and_fold_keep_a_symbolic_batch_dim():
    graph = kiln.trace(lambda t: F.fold(F.unfold(t, 2, stride=2), (4, 6), 2, stride=2), kiln.TensorSpec(("N", 3, 4, 6), "float64"))
    run = NumpyBackend().compile(graph)
    for batch in (1, 2):
        x = normal(batch, 3, 4, 6, seed=batch)
        np.testing.assert_array_equal(run(x)[0], x)  # non-overlapping windows that tile the image: fold undoes unfold


def test_an_infinite_input_stays_in_the_windows_that_hold_it():
    torch = require("torch")
    x = normal(1, 1, 4, 4)
    x[0, 0, 0, 0] = np.inf
    graph = kiln.trace(lambda t: F.unfold(t, 2), kiln.TensorSpec(x.shape, "float64"))
    np.testing.assert_array_equal(NumpyBackend().compile(graph)(x)[0], torch.nn.functional.unfold(torch.tensor(x), 2).numpy())


# GLU, hardsigmoid, bilinear -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [-1, 1, 0])
def test_glu_matches_torch(dim, dtype):
    torch = require("torch")
    assert_function_matches_torch(lambda x: F.glu(x, dim), lambda x: torch.nn.functional.glu(x, dim), normal(4, 6, 2, dtype=dtype) * 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hardsigmoid_matches_torch_including_its_kinks(dtype):
    """Values as PyTorch's ``(x + 3) / 6``; the slope is exactly 1/6 inside and 0 on and beyond the kinks -3 and 3.
    PyTorch's float64 backward multiplies by a float32 1/6 (relative error 3e-8), hence its looser tolerance."""
    torch = require("torch")
    x = np.concatenate([normal(20, dtype=dtype) * 4, np.array([-3.0, 3.0, 0.0, -3.5, 3.5, 2.999, -2.999], dtype)])
    graph = kiln.trace(F.hardsigmoid, kiln.TensorSpec(x.shape, dtype))
    np.testing.assert_allclose(NumpyBackend().compile(graph)(x)[0], torch.nn.functional.hardsigmoid(torch.tensor(x)).numpy(),
                               **tolerances(dtype))
    weights = normal(*x.shape, dtype=dtype, seed=5)
    for layer in (F.hardsigmoid, nn.Hardsigmoid()):
        grad = kiln.grad(lambda t: (layer(t) * weights).sum())(x)
        np.testing.assert_array_equal(grad, np.where(np.abs(x) < 3, weights / dtype_type(dtype)(6), 0))
        t = torch.tensor(x, requires_grad=True)
        (torch.nn.Hardsigmoid()(t) * torch.tensor(weights)).sum().backward()
        np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-7 if dtype == "float64" else 1e-6, atol=0)


def dtype_type(dtype):
    return np.dtype(dtype).type


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_functional_bilinear_matches_torch(with_bias, dtype):
    torch = require("torch")
    arrays = [normal(2, 5, 3, dtype=dtype, seed=1), normal(2, 5, 4, dtype=dtype, seed=2), normal(6, 3, 4, dtype=dtype, seed=3)]
    arrays += [normal(6, dtype=dtype, seed=4)] if with_bias else []
    assert_function_matches_torch(F.bilinear, torch.nn.functional.bilinear, *arrays)


# Layers ---------------------------------------------------------------------------------------------------------------


def _layer_pairs(torch):
    """``(kiln layer, torch layer, input shape)`` for every parameter-free spatial layer."""
    return [
        (nn.Upsample(scale_factor=1.5), torch.nn.Upsample(scale_factor=1.5), (2, 3, 4, 5)),
        (nn.Upsample(size=(7, 3), mode="bilinear"), torch.nn.Upsample(size=(7, 3), mode="bilinear"), (2, 3, 4, 5)),
        (nn.Upsample(scale_factor=2, mode="linear", align_corners=True),
         torch.nn.Upsample(scale_factor=2, mode="linear", align_corners=True), (2, 3, 5)),
        (nn.UpsamplingNearest2d(scale_factor=2), torch.nn.UpsamplingNearest2d(scale_factor=2), (2, 3, 4, 5)),
        (nn.UpsamplingBilinear2d(size=(6, 9)), torch.nn.UpsamplingBilinear2d(size=(6, 9)), (2, 3, 4, 5)),
        (nn.PixelShuffle(2), torch.nn.PixelShuffle(2), (2, 8, 3, 2)),
        (nn.PixelUnshuffle(2), torch.nn.PixelUnshuffle(2), (2, 2, 4, 6)),
        (nn.ChannelShuffle(3), torch.nn.ChannelShuffle(3), (2, 6, 2, 2)),
        (nn.ZeroPad1d((1, 2)), torch.nn.ZeroPad1d((1, 2)), (2, 3, 5)),
        (nn.ZeroPad2d((1, 2, 0, 3)), torch.nn.ZeroPad2d((1, 2, 0, 3)), (2, 3, 4, 5)),
        (nn.ConstantPad1d(2, 3.5), torch.nn.ConstantPad1d(2, 3.5), (2, 3, 5)),
        (nn.ConstantPad2d((0, 1, 2, 3), -1.0), torch.nn.ConstantPad2d((0, 1, 2, 3), -1.0), (2, 3, 4, 5)),
        (nn.ReflectionPad1d((3, 1)), torch.nn.ReflectionPad1d((3, 1)), (2, 3, 5)),
        (nn.ReflectionPad2d(2), torch.nn.ReflectionPad2d(2), (2, 3, 4, 5)),
        (nn.ReplicationPad1d((0, 4)), torch.nn.ReplicationPad1d((0, 4)), (2, 3, 5)),
        (nn.ReplicationPad2d((1, 0, 2, 3)), torch.nn.ReplicationPad2d((1, 0, 2, 3)), (3, 4, 5)),
        (nn.CircularPad1d(2), torch.nn.CircularPad1d(2), (2, 3, 5)),
        (nn.CircularPad2d((1, 2, 3, 0)), torch.nn.CircularPad2d((1, 2, 3, 0)), (2, 3, 4, 5)),
        (nn.ReflectionPad3d(1), torch.nn.ReflectionPad3d(1), (1, 2, 3, 4, 5)),
        (nn.ReplicationPad3d((1, 0, 0, 1, 2, 0)), torch.nn.ReplicationPad3d((1, 0, 0, 1, 2, 0)), (1, 2, 3, 4, 5)),
        (nn.CircularPad3d(1), torch.nn.CircularPad3d(1), (1, 2, 3, 4, 5)),
        (nn.ZeroPad3d(1), torch.nn.ZeroPad3d(1), (1, 2, 3, 4, 5)),
        (nn.ConstantPad3d((1, 0, 0, 1, 2, 0), 0.5), torch.nn.ConstantPad3d((1, 0, 0, 1, 2, 0), 0.5), (1, 2, 3, 4, 5)),
        (nn.Unfold((2, 3), dilation=(1, 2), padding=1, stride=2), torch.nn.Unfold((2, 3), dilation=(1, 2), padding=1, stride=2),
         (2, 3, 6, 7)),
        (nn.Fold((5, 6), 3, padding=1), torch.nn.Fold((5, 6), 3, padding=1), (2, 18, 30)),
        (nn.GLU(), torch.nn.GLU(), (2, 3, 4)),
        (nn.GLU(dim=1), torch.nn.GLU(dim=1), (2, 4, 3)),
        (nn.Dropout1d(0.4).eval(), torch.nn.Dropout1d(0.4).eval(), (2, 3, 4)),
        (nn.Dropout2d(0.4).eval(), torch.nn.Dropout2d(0.4).eval(), (2, 3, 4, 4)),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_parameter_free_layers_match_torch(dtype):
    torch = require("torch")
    assert repr(nn.Hardsigmoid()) == repr(torch.nn.Hardsigmoid())
    for index, (module, reference, shape) in enumerate(_layer_pairs(torch)):
        assert repr(module) == repr(reference), (repr(module), repr(reference))
        x = normal(*shape, dtype=dtype, seed=index) * 4
        assert_layer_matches_torch(torch, module, reference.double() if dtype == "float64" else reference, [x], **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_bilinear_layer_matches_torch(bias, dtype):
    torch = require("torch")
    kiln.manual_seed(3)
    module = nn.Bilinear(3, 4, 5, bias=bias, dtype=dtype)
    reference = torch.nn.Bilinear(3, 4, 5, bias=bias)
    reference = reference.double() if dtype == "float64" else reference
    assert set(module.state_dict()) == set(reference.state_dict()) and repr(module) == repr(reference)
    assert module.weight.data.shape == (5, 3, 4) and module.weight.data.dtype == np.dtype(dtype)
    assert_layer_matches_torch(torch, module, reference, [normal(6, 3, dtype=dtype, seed=1), normal(6, 4, dtype=dtype, seed=2)],
                               **tolerances(dtype))


def test_bilinear_init_follows_torch_bounds():
    kiln.manual_seed(0)
    module = nn.Bilinear(16, 4, 300)
    bound = 1 / np.sqrt(16)
    for parameter in (module.weight.data, module.bias.data):
        assert np.abs(parameter).max() <= bound and np.abs(parameter).max() > 0.95 * bound
    assert abs(module.weight.data.std() - bound / np.sqrt(3)) < 0.01  # U(-b, b) has std b / sqrt(3)


# Channel dropout ------------------------------------------------------------------------------------------------------


def _channel_dropout(function, shape, p):
    graph = kiln.trace(lambda x: function(x, p), kiln.TensorSpec(shape))
    run = NumpyBackend().compile(graph)
    return lambda x, seed: run(x, np.int64(seed))[0]


@pytest.mark.parametrize(("function", "shape"), [(F.dropout2d, (64, 50, 3, 2)), (F.dropout1d, (64, 50, 5))])
def test_channel_dropout_drops_whole_channels_at_rate_p(function, shape):
    p = 0.3
    x = normal(*shape, dtype="float32") + 5.0  # no zeros of its own
    run = _channel_dropout(function, shape, p)
    first, again, other = run(x, 7), run(x, 7), run(x, 8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    channels = first.reshape(shape[0], shape[1], -1)
    dropped = (channels == 0).all(axis=2)
    assert ((channels == 0).any(axis=2) == dropped).all(), "a channel is dropped whole or not at all"
    assert abs(dropped.mean() - p) < 0.03, dropped.mean()
    kept = ~dropped
    np.testing.assert_allclose(channels[kept], x.reshape(channels.shape)[kept] / (1 - p), rtol=1e-6)


def test_dropout2d_is_the_identity_in_eval_mode_and_random_only_in_training():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Dropout2d(0.5))
    eval_graph = kiln.trace(model.eval(), kiln.TensorSpec(("N", 2, 5, 5)))
    Decompose().run(eval_graph)
    assert not any(op.name == "tensor.random_uniform" for op in eval_graph.ops)
    x = normal(3, 2, 5, 5, dtype="float32")
    np.testing.assert_array_equal(kiln.compile(model)(x), kiln.compile(model[0])(x))
    train_graph = kiln.trace(model.train(), kiln.TensorSpec(("N", 2, 5, 5)))
    Decompose().run(train_graph)
    draws = [op for op in train_graph.ops if op.name == "tensor.random_uniform"]
    assert len(draws) == 1 and draws[0].results[0].type.shape == ("N", 4, 1, 1), "one draw per (N, C) channel"


def test_dropout1d_takes_an_unbatched_input():
    run = _channel_dropout(F.dropout1d, (40, 6), 0.5)
    out = run(normal(40, 6, dtype="float32") + 5.0, 3)
    assert 0 < (out == 0).all(axis=1).sum() < 40 and ((out == 0).any(axis=1) == (out == 0).all(axis=1)).all()


# A model: training step and ONNX export --------------------------------------------------------------------------------


def _kiln_model():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Upsample(scale_factor=1.5, mode="bilinear"), nn.ReflectionPad2d((1, 0, 2, 1)),
                         nn.Conv2d(4, 8, 3), nn.PixelShuffle(2), nn.ReplicationPad2d(1), nn.AdaptiveAvgPool2d((2, 2)),
                         nn.Flatten(), nn.Linear(8, 3))


def _torch_model(torch):
    tnn = torch.nn
    return tnn.Sequential(tnn.Conv2d(1, 4, 3), tnn.Upsample(scale_factor=1.5, mode="bilinear"), tnn.ReflectionPad2d((1, 0, 2, 1)),
                          tnn.Conv2d(4, 8, 3), tnn.PixelShuffle(2), tnn.ReplicationPad2d(1), tnn.AdaptiveAvgPool2d((2, 2)),
                          tnn.Flatten(), tnn.Linear(8, 3))


def test_compiled_training_step_follows_torch_and_lowers_the_loss():
    torch = require("torch")
    kiln.manual_seed(4)
    model, reference = _kiln_model(), _torch_model(torch)
    x = normal(8, 1, 6, 6, dtype="float32", seed=2)
    y = np.random.default_rng(1).integers(0, 3, 8)
    losses = sgd_losses_in_lockstep(torch, model, reference, x, y, lr=0.3, steps=12)
    assert losses[-1] < 0.9 * losses[0], losses


def _window_model():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GLU(1), nn.Upsample(scale_factor=2), nn.Unfold(3, padding=1, stride=2),
                         nn.Fold((12, 12), 3, padding=1, stride=2), nn.CircularPad2d(1), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
                         nn.Linear(8, 3))


@pytest.mark.parametrize("build", [_kiln_model, _window_model])
def test_training_step_runs_in_onnxruntime(build):
    """The step's backward (scatter-adds of the gathers, gathers of fold's scatter-add) lowered to ONNX."""
    require("onnxruntime")
    kiln.manual_seed(5)
    model = build()
    x, y = normal(4, 1, 6, 6, dtype="float32", seed=3), np.random.default_rng(2).integers(0, 3, 4)
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    report = kiln.parity(step, [x, y], backends=["onnxruntime"])
    assert report.ok, str(report)


def test_onnx_export_matches_onnxruntime_and_torch(tmp_path):
    onnx, ort, torch = require("onnx"), require("onnxruntime"), require("torch")
    kiln.manual_seed(6)
    model = _kiln_model()
    reference = _torch_model(torch)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    path = str(tmp_path / "spatial.onnx")
    proto = kiln.export_onnx(model.eval(), [kiln.TensorSpec(("N", 1, 6, 6))], path)
    onnx.checker.check_model(proto, full_check=True)
    session, predict = ort.InferenceSession(path), kiln.compile(model)
    for batch in (1, 3):
        x = normal(batch, 1, 6, 6, dtype="float32", seed=batch)
        expected = reference.eval()(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(predict(x), expected, rtol=1e-5, atol=1e-5)


def test_unfold_fold_and_glu_export_to_onnx(tmp_path):
    ort = require("onnxruntime")

    def blocks(x):
        return F.fold(F.unfold(x, 3, padding=1, stride=2) * 0.5, (5, 6), 3, padding=1, stride=2) + F.glu(x, 1).sum()

    path = str(tmp_path / "blocks.onnx")
    kiln.export_onnx(blocks, [kiln.TensorSpec(("N", 2, 5, 6))], path)
    session, predict = ort.InferenceSession(path), kiln.compile(blocks)
    x = normal(2, 2, 5, 6, dtype="float32")
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], predict(x), rtol=1e-5, atol=1e-5)


# Errors ---------------------------------------------------------------------------------------------------------------

ERRORS = [
    (lambda x: F.pad(x, (5, 1), "reflect"), (2, 3, 5), "must be less than"),
    (lambda x: F.pad(x, (6, 0), "circular"), (2, 3, 5), "wraps around more than once"),
    (lambda x: F.pad(x, (1, 1), "reflect"), (2, 2, 3, 5), "needs a 2-D or 3-D input"),
    (lambda x: F.pad(x, (1, 1, 1), "replicate"), (2, 3, 5), "divisible by 2"),
    (lambda x: F.pad(x, (-3, -2), "replicate"), (2, 3, 5), "empty"),
    (lambda x: F.pad(x, (1, 1), "wrap"), (2, 3, 5), "unknown mode"),
    (lambda x: F.pixel_shuffle(x, 2), (2, 6, 3, 3), "divisible by upscale_factor"),
    (lambda x: F.pixel_unshuffle(x, 2), (2, 2, 3, 4), "divisible by downscale_factor"),
    (lambda x: F.channel_shuffle(x, 4), (2, 6, 3), "divisible by groups"),
    (lambda x: F.interpolate(x, size=4, scale_factor=2), (2, 3, 5, 5), "exactly one of size and scale_factor"),
    (lambda x: F.interpolate(x), (2, 3, 5, 5), "exactly one of size and scale_factor"),
    (lambda x: F.interpolate(x, scale_factor=2, align_corners=True), (2, 3, 5, 5), "align_corners"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"), (2, 3, 5), "'bicubic' needs a 4-D"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="lanczos"), (2, 3, 5, 5), "'lanczos' is not supported"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="linear"), (2, 3, 5, 5), "needs a 3-D input"),
    (lambda x: F.interpolate(x, size=(3,)), (2, 3, 5, 5), "one entry per spatial dim"),
    (lambda x: F.interpolate(x, scale_factor=0.1), (2, 3, 5, 5), "greater than 0"),
    (lambda x: F.interpolate(x, size=4, recompute_scale_factor=True), (2, 3, 5, 5), "not meaningful"),
    (lambda x: F.interpolate(x, scale_factor=2), ("N", 3, "H", 5), "static sizes"),
    (lambda x: F.unfold(x, 6), (2, 3, 5, 5), "sliding blocks"),
    (lambda x: F.unfold(x, 2, stride=0), (2, 3, 5, 5), "stride must be positive"),
    (lambda x: F.fold(x, (5, 5), 2), (2, 12, 15), "16 sliding blocks|4 \\* 4 = 16"),
    (lambda x: F.fold(x, (5, 5), 2), (2, 11, 16), "divisible by the kernel's size"),
    (lambda x: F.glu(x, 1), (2, 5, 3), "even size"),
    (lambda x: F.dropout2d(x, 0.5), (5,), "dropout2d needs a channel dim"),
]


@pytest.mark.parametrize(("call", "shape", "message"), ERRORS, ids=[message for _, _, message in ERRORS])
def test_bad_arguments_say_what_is_wrong(call, shape, message):
    with pytest.raises(KilnError, match=message):
        kiln.trace(call, kiln.TensorSpec(shape))


def test_bilinear_with_mismatched_inputs_says_what_is_wrong():
    with pytest.raises(KilnError, match="in1=3 and in2=4"):
        kiln.trace(F.bilinear, kiln.TensorSpec((2, 3)), kiln.TensorSpec((2, 5)), kiln.TensorSpec((6, 3, 4)))


def test_layer_arguments_are_checked_at_construction():
    with pytest.raises(ValueError, match="4-tuple"):
        nn.ReflectionPad2d((1, 2))
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Dropout2d(1.5)
