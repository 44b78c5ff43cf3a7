"""The layers and functions of ``frontend/functional_extra*.py`` and ``frontend/layers_extra.py`` against PyTorch:
values and every parameter and input gradient in float32 (rtol 1e-5) and float64 (rtol 1e-10) over grids of options,
``state_dict`` keys and reprs, symbolic batch dims, and the errors for unsupported arguments. The random layers are
in ``test_extra_random_layers.py``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import KilnError
from kiln.frontend.functional_extra_losses import cdist
from layer_parity import as_dtype, assert_layer_matches_torch, normal, randomize, tolerances
from oracles import require

DTYPES = ["float32", "float64"]


def assert_function_matches_torch(ours, theirs, *arrays, dtype=None):
    """``ours(*tensors)`` traced and run on NumPy against ``theirs(*torch tensors)``: the value, and the gradient of
    ``sum(output * weights)`` in every floating-point input (random weights, so a misplaced cell shows)."""
    torch = require("torch")
    dtype = dtype or next(str(a.dtype) for a in arrays if a.dtype.kind == "f")
    tensors = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    expected = theirs(*tensors)
    weights = normal(*expected.shape, dtype=dtype, seed=5)
    (expected * torch.tensor(weights)).sum().backward()
    graph = kiln.trace(ours, *[kiln.TensorSpec(a.shape, str(a.dtype)) for a in arrays])
    (value,) = NumpyBackend().compile(graph)(*arrays)
    np.testing.assert_allclose(value, expected.detach().numpy(), err_msg="value", **_tolerances(dtype))
    floats = tuple(i for i, a in enumerate(arrays) if a.dtype.kind == "f")
    if not floats:
        return
    grads = kiln.grad(lambda *xs: (ours(*xs) * weights).sum(), argnums=floats)(*arrays)
    for index, got in zip(floats, grads if isinstance(grads, tuple) else (grads,)):
        np.testing.assert_allclose(got, tensors[index].grad.numpy(), err_msg=f"gradient of input {index}", **_tolerances(dtype))


def _tolerances(dtype):
    return tolerances(dtype) or {"rtol": 1e-5, "atol": 1e-6}


def assert_repr_and_keys_match(module, reference):
    assert repr(module) == repr(reference)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {k: tuple(v.shape) for k, v in reference.state_dict().items()}


# ConvTranspose1d -------------------------------------------------------------------------------------------------------

CONV_T_CASES = {
    "plain": dict(kernel_size=3),
    "stride_padding": dict(kernel_size=3, stride=2, padding=1),
    "output_padding": dict(kernel_size=4, stride=3, padding=1, output_padding=2),
    "groups_no_bias": dict(kernel_size=2, stride=2, groups=2, bias=False),
    "dilation": dict(kernel_size=3, dilation=3, output_padding=2, stride=2),
    "tuples": dict(kernel_size=(3,), stride=(2,), padding=(2,), dilation=(2,)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CONV_T_CASES))
def test_conv_transpose1d_matches_torch(case, dtype):
    torch = require("torch")
    options = CONV_T_CASES[case]
    module = randomize(nn.ConvTranspose1d(4, 6, dtype=dtype, **options))
    reference = as_dtype(torch.nn.ConvTranspose1d(4, 6, **options), dtype)
    assert_repr_and_keys_match(module, reference)
    for shape in ((2, 4, 7), (4, 5)):
        assert_layer_matches_torch(torch, module, reference, [normal(*shape, dtype=dtype)], **tolerances(dtype))


def test_conv_transpose1d_keeps_a_symbolic_batch_and_checks_its_arguments():
    module = nn.ConvTranspose1d(2, 3, 3, stride=2)
    graph = kiln.trace(module, kiln.TensorSpec(("N", 2, 5)))
    assert graph.outputs[0].type.shape == ("N", 3, 11)
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose1d(2, 3, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="zeros"):
        nn.ConvTranspose1d(2, 3, 3, padding_mode="reflect")
    with pytest.raises(KilnError, match=r"(?s)test_extra_layers_vs_torch\.py:\d+.*conv_transpose1d expects"):
        kiln.trace(lambda x: F.conv_transpose1d(x, module.weight), kiln.TensorSpec((1, 2, 3, 3)))


# InstanceNorm1d --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("affine", "bias"), [(False, True), (True, True), (True, False)])
def test_instance_norm1d_matches_torch(affine, bias, dtype):
    torch = require("torch")
    module = randomize(nn.InstanceNorm1d(3, eps=1e-3, affine=affine, bias=bias, dtype=dtype))
    reference = as_dtype(torch.nn.InstanceNorm1d(3, eps=1e-3, affine=affine, bias=bias), dtype)
    assert_repr_and_keys_match(module, reference)
    for shape in ((4, 3, 5), (3, 6)):
        assert_layer_matches_torch(torch, module, reference, [normal(*shape, dtype=dtype) * 2 + 1], **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_instance_norm1d_running_statistics_follow_torch(dtype):
    torch = require("torch")
    module = randomize(nn.InstanceNorm1d(3, momentum=0.3, affine=True, track_running_stats=True, dtype=dtype))
    reference = as_dtype(torch.nn.InstanceNorm1d(3, momentum=0.3, affine=True, track_running_stats=True), dtype)
    assert_repr_and_keys_match(module, reference)
    x = normal(4, 3, 5, dtype=dtype) * 2 + 1
    assert_layer_matches_torch(torch, module, reference, [x], **tolerances(dtype))  # training: each instance's statistics
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in module.state_dict().items()})
    forward = kiln.compile(module)
    for seed in range(2):
        batch = normal(4, 3, 5, dtype=dtype, seed=seed) * 2 + 1
        forward(batch)
        reference(torch.tensor(batch))
    assert not np.allclose(module.running_mean.data, 0)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(module.state_dict()[name], reference.state_dict()[name].numpy(), rtol=1e-6, err_msg=name)
    assert_layer_matches_torch(torch, module.eval(), reference.eval(), [x], **tolerances(dtype))  # eval: the running ones


def test_instance_norm1d_checks_its_input():
    with pytest.raises(KilnError, match="expected 2D or 3D input"):
        kiln.trace(nn.InstanceNorm1d(3), kiln.TensorSpec((2, 3, 4, 4)))
    with pytest.raises(KilnError, match=r"num_features \(3\)"):
        kiln.trace(nn.InstanceNorm1d(3, affine=True), kiln.TensorSpec((2, 4, 4)))
    graph = kiln.trace(nn.InstanceNorm1d(3), kiln.TensorSpec(("N", 3, 4)))
    assert graph.outputs[0].type.shape == ("N", 3, 4)


# LocalResponseNorm -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("size", "shape"), [(3, (2, 5, 4)), (2, (2, 6, 3, 3)), (5, (1, 4, 2, 2, 3)), (1, (2, 3, 4))])
def test_local_response_norm_matches_torch(size, shape, dtype):
    torch = require("torch")
    module = nn.LocalResponseNorm(size, alpha=0.5, beta=0.6, k=1.5)
    reference = torch.nn.LocalResponseNorm(size, alpha=0.5, beta=0.6, k=1.5)
    assert repr(module) == repr(reference)
    assert_layer_matches_torch(torch, module, reference, [normal(*shape, dtype=dtype)], **tolerances(dtype))


# LPPool --------------------------------------------------------------------------------------------------------------

LP_CASES = [(2, 3, None, False), (1.5, 2, 1, False), (3, 3, 2, True), (float("inf"), 2, 1, False), (2.0, 3, 2, True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("norm_type", "kernel", "stride", "ceil_mode"), LP_CASES)
def test_lp_pool1d_matches_torch(norm_type, kernel, stride, ceil_mode, dtype):
    torch = require("torch")
    module, reference = nn.LPPool1d(norm_type, kernel, stride, ceil_mode), torch.nn.LPPool1d(norm_type, kernel, stride, ceil_mode)
    assert repr(module) == repr(reference)
    x = np.abs(normal(2, 3, 8, dtype=dtype)) + 0.1 if norm_type in (1.5, 3) else normal(2, 3, 8, dtype=dtype)
    assert_layer_matches_torch(torch, module, reference, [x], **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("norm_type", "kernel", "stride", "ceil_mode"), LP_CASES + [(2, (2, 3), (1, 2), True)])
def test_lp_pool2d_matches_torch(norm_type, kernel, stride, ceil_mode, dtype):
    torch = require("torch")
    module, reference = nn.LPPool2d(norm_type, kernel, stride, ceil_mode), torch.nn.LPPool2d(norm_type, kernel, stride, ceil_mode)
    assert repr(module) == repr(reference)
    x = np.abs(normal(2, 2, 7, 6, dtype=dtype)) + 0.1 if norm_type in (1.5, 3) else normal(2, 2, 7, 6, dtype=dtype)
    assert_layer_matches_torch(torch, module, reference, [x], **tolerances(dtype))


# MaxUnpool -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kernel", "stride", "padding", "output_size"), [(2, None, 0, None), (3, 2, 1, None), (2, 2, 0, [9]),
                                                                          (3, 1, 0, None), (2, 3, 0, [2, 3, 10])])
def test_max_unpool1d_of_max_pool1d_matches_torch(kernel, stride, padding, output_size, dtype):
    """Overlapping windows (stride 1 with kernel 3) repeat an index: the value once, the gradient to each, as PyTorch."""
    torch = require("torch")
    x = normal(2, 3, 9, dtype=dtype)

    def ours(t):
        pooled, indices = F.max_pool1d(t, kernel, stride, padding, return_indices=True)
        return nn.MaxUnpool1d(kernel, stride, padding)(pooled * 2.0, indices, output_size)

    def theirs(t):
        pooled, indices = torch.nn.functional.max_pool1d(t, kernel, stride, padding, return_indices=True)
        return torch.nn.MaxUnpool1d(kernel, stride, padding)(pooled * 2.0, indices, output_size)

    assert_function_matches_torch(ours, theirs, x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kernel", "stride", "padding", "output_size"), [(2, None, 0, None), ((3, 2), (2, 1), (1, 0), (6, 6)),
                                                                          (2, 2, 0, (7, 7)), (3, 1, 1, None)])
def test_max_unpool2d_of_max_pool2d_matches_torch(kernel, stride, padding, output_size, dtype):
    torch = require("torch")

    def ours(t):
        pooled, indices = F.max_pool2d(t, kernel, stride, padding, return_indices=True)
        return F.max_unpool2d(pooled.tanh(), indices, kernel, stride, padding, output_size)

    def theirs(t):
        pooled, indices = torch.nn.functional.max_pool2d(t, kernel, stride, padding, return_indices=True)
        return torch.nn.functional.max_unpool2d(pooled.tanh(), indices, kernel, stride, padding, output_size)

    assert_function_matches_torch(ours, theirs, normal(2, 2, 6, 6, dtype=dtype), dtype=dtype)


def test_max_unpool_with_given_indices_matches_torch_including_a_repeated_index():
    torch = require("torch")
    x = normal(2, 1, 4)
    indices = np.array([[[0, 3, 3, 7]], [[1, 1, 1, 1]]], dtype=np.int64)  # the last write wins, as PyTorch's CPU kernel
    assert_function_matches_torch(lambda t, i: F.max_unpool1d(t, i, 2), lambda t, i: torch.nn.functional.max_unpool1d(t, i, 2), x, indices)
    unbatched = normal(3, 2, 2)
    plane = np.array([[[0, 5], [6, 15]]] * 3, dtype=np.int64)
    assert_function_matches_torch(lambda t, i: F.max_unpool2d(t, i, 2), lambda t, i: torch.nn.functional.max_unpool2d(t, i, 2),
                                  unbatched, plane)


def test_max_unpool_keeps_a_symbolic_batch_and_checks_output_size():
    graph = kiln.trace(lambda x, i: F.max_unpool2d(x, i, 2), kiln.TensorSpec(("N", 3, 2, 2)), kiln.TensorSpec(("N", 3, 2, 2), "int64"))
    assert graph.outputs[0].type.shape == ("N", 3, 4, 4)
    with pytest.raises(KilnError, match=r"(?s)test_extra_layers_vs_torch\.py:\d+.*invalid output_size"):
        kiln.trace(lambda x, i: F.max_unpool1d(x, i, 2, output_size=[7]), kiln.TensorSpec((1, 3, 2)), kiln.TensorSpec((1, 3, 2), "int64"))


# EmbeddingBag ----------------------------------------------------------------------------------------------------------

BAG_2D = np.array([[1, 2, 4, 5], [4, 3, 2, 9], [0, 0, 0, 0]], dtype=np.int64)
BAG_1D = np.array([1, 2, 4, 5, 4, 3, 2, 9, 0, 7], dtype=np.int64)
OFFSETS = {"plain": [0, 2, 2, 7], "last_offset": [0, 3, 3, 6, 10], "last_offset_empty_bags": [0, 0, 4, 10, 10]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 0, -6])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_2d_matches_torch(mode, padding_idx, dtype):
    torch = require("torch")
    module = randomize(nn.EmbeddingBag(10, 3, mode=mode, padding_idx=padding_idx, dtype=dtype))
    reference = as_dtype(torch.nn.EmbeddingBag(10, 3, mode=mode, padding_idx=padding_idx), dtype)
    assert_repr_and_keys_match(module, reference)
    assert_layer_matches_torch(torch, module, reference, [BAG_2D], **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 4])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("offsets", sorted(OFFSETS))
def test_embedding_bag_1d_with_traced_offsets_matches_torch(offsets, mode, padding_idx, dtype):
    """Empty bags (repeated offsets) give zeros; a padding-only bag too; with ``include_last_offset`` the last offset
    ends the last bag."""
    torch = require("torch")
    last = offsets.startswith("last_offset")
    module = randomize(nn.EmbeddingBag(10, 3, mode=mode, padding_idx=padding_idx, include_last_offset=last, dtype=dtype))
    reference = as_dtype(torch.nn.EmbeddingBag(10, 3, mode=mode, padding_idx=padding_idx, include_last_offset=last), dtype)
    assert_layer_matches_torch(torch, module, reference, [BAG_1D, np.array(OFFSETS[offsets], np.int64)], **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_bag_per_sample_weights_match_torch(padding_idx, dtype):
    torch = require("torch")
    module = randomize(nn.EmbeddingBag(10, 3, mode="sum", padding_idx=padding_idx, dtype=dtype))
    reference = as_dtype(torch.nn.EmbeddingBag(10, 3, mode="sum", padding_idx=padding_idx), dtype)
    weights_2d, weights_1d = normal(*BAG_2D.shape, dtype=dtype, seed=3), normal(*BAG_1D.shape, dtype=dtype, seed=4)
    call = lambda m, x, w: m(x, per_sample_weights=w)  # noqa: E731
    assert_layer_matches_torch(torch, module, reference, [BAG_2D, weights_2d], call, **tolerances(dtype))
    call = lambda m, x, o, w: m(x, o, per_sample_weights=w)  # noqa: E731
    offsets = np.array(OFFSETS["plain"], np.int64)
    assert_layer_matches_torch(torch, module, reference, [BAG_1D, offsets, weights_1d], call, **tolerances(dtype))


def test_embedding_bag_takes_constant_offsets_keeps_a_symbolic_batch_and_checks_its_options():
    torch = require("torch")
    weight = normal(10, 3)
    assert_function_matches_torch(lambda w: F.embedding_bag(kiln.tensor(BAG_1D), w, [0, 5], mode="max"),
                                  lambda w: torch.nn.functional.embedding_bag(torch.tensor(BAG_1D), w, torch.tensor([0, 5]), mode="max"),
                                  weight)
    graph = kiln.trace(nn.EmbeddingBag(10, 3), kiln.TensorSpec(("N", 4), "int64"))
    assert graph.outputs[0].type.shape == ("N", 3)
    bag = nn.EmbeddingBag(10, 3)
    for call, message in [
        (lambda x: F.embedding_bag(x, bag.weight, mode="mean", per_sample_weights=x.double()), "per_sample_weights"),
        (lambda x: F.embedding_bag(x, bag.weight, max_norm=1.0), "max_norm"),
        (lambda x: F.embedding_bag(x, bag.weight, mode="median"), "mode has to be"),
        (lambda x: F.embedding_bag(x.reshape(-1), bag.weight), "needs offsets"),
        (lambda x: F.embedding_bag(x, bag.weight, [0, 1]), "offsets has to be None"),
    ]:
        with pytest.raises(KilnError, match=rf"(?s)test_extra_layers_vs_torch\.py:\d+.*{message}"):
            kiln.trace(call, kiln.TensorSpec((2, 4), "int64"))


# Distances -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 0.5, float("inf"), 0.0])
def test_pdist_matches_torch_in_torchs_order(p, dtype):
    torch = require("torch")
    x = normal(5, 4, dtype=dtype)
    x[3] = x[1]  # a zero distance: gradient 0, as PyTorch's
    assert_function_matches_torch(lambda t: F.pdist(t, p), lambda t: torch.nn.functional.pdist(t, p), x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize(("shape1", "shape2"), [((4, 3), (5, 3)), ((2, 4, 3), (2, 6, 3)), ((2, 1, 3, 2), (3, 4, 2))])
def test_cdist_matches_torch(shape1, shape2, p, dtype):
    torch = require("torch")
    x1, x2 = normal(*shape1, dtype=dtype), normal(*shape2, dtype=dtype, seed=1)
    assert_function_matches_torch(lambda a, b: cdist(a, b, p), lambda a, b: torch.cdist(a, b, p), x1, x2, dtype=dtype)


def test_cdist_beyond_25_rows_computes_differences_and_keeps_a_symbolic_batch():
    torch = require("torch")
    x1, x2 = normal(30, 3), normal(27, 3, seed=1)
    mode = "donot_use_mm_for_euclid_dist"
    assert_function_matches_torch(lambda a, b: cdist(a, b, compute_mode=mode), lambda a, b: torch.cdist(a, b, compute_mode=mode), x1, x2)
    graph = kiln.trace(lambda a, b: cdist(a, b), kiln.TensorSpec(("N", 4, 3)), kiln.TensorSpec(("N", 5, 3)))
    assert graph.outputs[0].type.shape == ("N", 4, 5)
    with pytest.raises(KilnError, match="non-negative p"):
        kiln.trace(lambda t: F.pdist(t, -1.0), kiln.TensorSpec((3, 2)))


# Losses --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("distance", ["default", "cosine"])
def test_triplet_margin_with_distance_loss_matches_torch(distance, swap, reduction, dtype):
    torch = require("torch")
    ours_distance = None if distance == "default" else (lambda a, b: 1.0 - F.cosine_similarity(a, b))
    theirs_distance = None if distance == "default" else (lambda a, b: 1.0 - torch.nn.functional.cosine_similarity(a, b))
    module = nn.TripletMarginWithDistanceLoss(distance_function=ours_distance, margin=0.7, swap=swap, reduction=reduction)
    reference = torch.nn.TripletMarginWithDistanceLoss(distance_function=theirs_distance, margin=0.7, swap=swap, reduction=reduction)
    arrays = [normal(6, 4, dtype=dtype, seed=s) for s in range(3)]
    assert_layer_matches_torch(torch, module, reference, arrays, **tolerances(dtype))


TARGETS = np.array([[3, 0, -1, 1, 2], [1, 2, 3, 4, 0], [-1, 2, 0, 0, 0], [2, 2, -1, 0, 0]], dtype=np.int64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_multilabel_margin_loss_matches_torch(reduction, dtype):
    """Labels up to the first -1 (none at all in row 3, all in row 2; a repeated one in row 4)."""
    torch = require("torch")
    module, reference = nn.MultiLabelMarginLoss(reduction), torch.nn.MultiLabelMarginLoss(reduction=reduction)
    assert repr(module) == repr(reference)
    x = normal(4, 5, dtype=dtype)
    assert_layer_matches_torch(torch, module, reference, [x, TARGETS], **tolerances(dtype))
    assert_layer_matches_torch(torch, module, reference, [x[0], TARGETS[0]], **tolerances(dtype))


def test_losses_keep_a_symbolic_batch_and_check_their_arguments():
    graph = kiln.trace(nn.MultiLabelMarginLoss("none"), kiln.TensorSpec(("N", 5)), kiln.TensorSpec(("N", 5), "int64"))
    assert graph.outputs[0].type.shape == ("N",)
    with pytest.raises(ValueError, match="margin to be greater than 0"):
        nn.TripletMarginWithDistanceLoss(margin=0.0)
    with pytest.raises(KilnError, match=r"(?s)test_extra_layers_vs_torch\.py:\d+.*integer targets"):
        kiln.trace(nn.MultiLabelMarginLoss(), kiln.TensorSpec((2, 5)), kiln.TensorSpec((2, 4), "int64"))


# Deprecated upsampling -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "options"), [("upsample", dict(scale_factor=2, mode="bilinear", align_corners=False)),
                                               ("upsample", dict(size=(5, 7))), ("upsample_nearest", dict(scale_factor=2)),
                                               ("upsample_bilinear", dict(size=(7, 9))), ("upsample_bilinear", dict(scale_factor=1.5))])
def test_deprecated_upsampling_matches_torch_and_warns(name, options, dtype):
    torch = require("torch")
    x = normal(2, 3, 4, 5, dtype=dtype)
    with pytest.warns(UserWarning, match="deprecated"):
        assert_function_matches_torch(lambda t: getattr(F, name)(t, **options),
                                      lambda t: getattr(torch.nn.functional, name)(t, **options), x, dtype=dtype)


@pytest.mark.parametrize("name", ["upsample", "upsample_nearest", "upsample_bilinear"])
def test_deprecated_upsampling_warns_in_torchs_words(name):
    """Torch's sentence, backquotes included (a ``filterwarnings`` written for torch's message filters kiln's too)."""
    torch = require("torch")
    messages = []
    for functional, lib in ((F, kiln), (torch.nn.functional, torch)):
        with pytest.warns(UserWarning) as caught:
            getattr(functional, name)(lib.ones(1, 1, 2, 2), scale_factor=2)
        messages.append([str(warning.message) for warning in caught])
    assert messages[0] == messages[1]
