"""PyTorch's aliases and small additions against torch in float64: ``F.max_pool1d/2d_with_indices`` and
``F.adaptive_max_pool1d/2d_with_indices`` (values, int64 indices, gradients; any adaptive size, ties and unbatched),
``F.dropout3d``, ``F.lp_pool3d``/``nn.LPPool3d``, ``F.max_unpool3d``/
``nn.MaxUnpool3d`` (fed by torch's own 3-D indices), ``nn.SyncBatchNorm`` over (N, C, *) with
``convert_sync_batchnorm``, and ``nn.NLLLoss2d``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import TraceError
from layer_parity import assert_layer_matches_torch, normal
from oracles import require

F64 = dict(rtol=1e-10, atol=1e-12)


def _parity(torch, kiln_fn, torch_fn, *arrays):
    """``kiln_fn`` and ``torch_fn`` (the values part) agree in value and in every input's gradient."""
    assert_layer_matches_torch(torch, nn.Module(), torch.nn.Module(), list(arrays), call=lambda _, *xs: kiln_fn(*xs),
                               torch_call=lambda _, *xs: torch_fn(*xs), **F64)


def _indices(fn, *arrays):
    return np.asarray(kiln.compile(fn, batch_dim=None)(*arrays))


POOLS_WITH_INDICES = {
    "max1d": ("max_pool1d_with_indices", (2, 3, 11), (3,), {"stride": 2, "padding": 1}),
    "max1d_ceil_dilated": ("max_pool1d_with_indices", (3, 9), (2,), {"dilation": 2, "ceil_mode": True}),
    "max2d": ("max_pool2d_with_indices", (2, 3, 7, 6), ((3, 2),), {"stride": (2, 1), "padding": (1, 0)}),
    "adaptive1d_uneven": ("adaptive_max_pool1d_with_indices", (2, 3, 10), (4,), {}),
    "adaptive1d_unbatched": ("adaptive_max_pool1d_with_indices", (3, 7), (3,), {}),
    "adaptive2d_uneven": ("adaptive_max_pool2d_with_indices", (2, 3, 7, 5), ((3, 4),), {}),
    "adaptive2d_none_dim": ("adaptive_max_pool2d_with_indices", (2, 2, 6, 5), ((4, None),), {}),
    "adaptive2d_tiles": ("adaptive_max_pool2d_with_indices", (2, 2, 6, 4), (2,), {}),
    "adaptive3d_uneven": ("adaptive_max_pool3d_with_indices", (2, 2, 5, 7, 4), ((2, 3, 3),), {}),
    "adaptive3d_none_dim_unbatched": ("adaptive_max_pool3d_with_indices", (2, 4, 6, 5), ((None, 4, 2),), {}),
    "adaptive3d_return_indices": ("adaptive_max_pool3d", (1, 3, 4, 4, 6), (2,), {"return_indices": True}),
}


@pytest.mark.parametrize("case", POOLS_WITH_INDICES)
def test_pools_with_indices_match_torch(case):
    torch = require("torch")
    name, shape, arguments, options = POOLS_WITH_INDICES[case]
    x = normal(*shape, dtype="float64")
    x.reshape(-1)[::5] = 0.25  # ties: the first largest wins, in value, index and gradient
    ours, theirs = getattr(F, name), getattr(torch.nn.functional, name)
    _parity(torch, lambda t: ours(t, *arguments, **options)[0], lambda t: theirs(t, *arguments, **options)[0], x)
    expected = theirs(torch.tensor(x), *arguments, **options)[1].numpy()
    indices = _indices(lambda t: ours(t, *arguments, **options)[1], x)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, expected)


@pytest.mark.parametrize("norm_type", [2.0, 1.5, float("inf")])
def test_lp_pool3d_matches_torch(norm_type):
    torch = require("torch")
    x = np.abs(normal(2, 3, 5, 6, 4, dtype="float64")) + 0.1
    ours, theirs = nn.LPPool3d(norm_type, (2, 3, 2), stride=(1, 2, 2)), torch.nn.LPPool3d(norm_type, (2, 3, 2), stride=(1, 2, 2))
    assert repr(ours) == repr(theirs)
    assert_layer_matches_torch(torch, ours, theirs, [x], **F64)


@pytest.mark.parametrize("options", [{}, {"stride": (1, 2, 2), "padding": (0, 1, 0)}])
def test_max_unpool3d_matches_torch_on_torchs_indices(options):
    torch = require("torch")
    volume = normal(2, 2, 5, 6, 4, dtype="float64")
    pooled, indices = torch.nn.functional.max_pool3d(torch.tensor(volume), 2, return_indices=True, **options)
    ours, theirs = nn.MaxUnpool3d(2, **options), torch.nn.MaxUnpool3d(2, **options)
    assert repr(ours) == repr(theirs)
    assert_layer_matches_torch(torch, ours, theirs, [pooled.numpy(), indices.numpy()], **F64)
    size = (2, 2, 5, 6, 4) if not options else (5, 7, 4)
    _parity(torch, lambda p, i: F.max_unpool3d(p, i, 2, output_size=size, **options),
            lambda p, i: torch.nn.functional.max_unpool3d(p, i, 2, output_size=size, **options), pooled.numpy(), indices.numpy())


def test_dropout3d_drops_whole_channels_and_is_the_identity_in_eval():
    x = np.ones((4, 8, 2, 3, 2))
    from kiln.backends.numpy import NumpyBackend

    graph = kiln.trace(lambda t: F.dropout3d(t, 0.5), kiln.TensorSpec(x.shape, "float64"))
    out = NumpyBackend().compile(graph)(x, np.asarray(7, np.int64))[0]
    per_channel = out.reshape(4, 8, -1)
    assert set(np.unique(per_channel)) <= {0.0, 2.0} and (per_channel.min(-1) == per_channel.max(-1)).all()
    assert 0 < (per_channel[..., 0] == 0).sum() < 32
    unbatched = kiln.trace(lambda t: F.dropout3d(t, 0.5, training=False), kiln.TensorSpec(x.shape[1:], "float64"))
    np.testing.assert_array_equal(NumpyBackend().compile(unbatched)(x[0])[0], x[0])
    with pytest.raises(TraceError, match="dropout3d expects"):
        kiln.trace(lambda t: F.dropout3d(t), kiln.TensorSpec((2, 3, 4), "float64"))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 2)])
@pytest.mark.parametrize("track", [True, False])
def test_sync_batch_norm_matches_torch_over_any_rank(shape, track):
    torch = require("torch")
    ours = nn.SyncBatchNorm(3, momentum=0.2, track_running_stats=track, dtype="float64")
    theirs = torch.nn.SyncBatchNorm(3, momentum=0.2, track_running_stats=track, dtype=torch.float64)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for parameter in ours.parameters():
        parameter.data[...] = normal(3, dtype="float64", seed=parameter.data.size + len(shape))
    assert_layer_matches_torch(torch, ours, theirs, [normal(*shape, dtype="float64")], **F64)


def test_sync_batch_norm_trains_its_running_statistics_and_evaluates_with_them():
    torch = require("torch")
    ours, theirs = nn.SyncBatchNorm(3, dtype="float64"), torch.nn.SyncBatchNorm(3, dtype=torch.float64)
    x = normal(4, 3, 5, 2, dtype="float64")
    kiln.compile(ours)(x)
    theirs(torch.tensor(x))
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy(), err_msg=name, **F64)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(kiln.compile(ours)(x), theirs(torch.tensor(x)).detach().numpy(), **F64)


def test_convert_sync_batchnorm_replaces_every_batch_norm_keeping_its_state():
    torch = require("torch")
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12, affine=False)))
    model[1].running_mean.data[...] = [1.0, 2.0, 3.0]
    model.eval()
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group="group")
    assert converted is model and type(model[1]) is nn.SyncBatchNorm and type(model[2][1]) is nn.SyncBatchNorm
    assert model[2][1].weight is None and model[1].process_group == "group" and not model[1].training
    assert {k: np.array(v).tolist() for k, v in model.state_dict().items()} == {k: v.tolist() for k, v in before.items()}
    reference = torch.nn.SyncBatchNorm.convert_sync_batchnorm(
        torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.Sequential(torch.nn.Flatten(),
                                                                                                   torch.nn.BatchNorm1d(12, affine=False))))
    assert repr(model[1]) == repr(reference[1]) and repr(model[2][1]) == repr(reference[2][1])
    single = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(3))
    assert type(single) is nn.SyncBatchNorm


@pytest.mark.parametrize("legacy", [{}, {"size_average": False}, {"reduce": False}])
def test_nll_loss2d_is_nll_loss(legacy):
    torch = require("torch")
    ours, theirs = nn.NLLLoss2d(**legacy), torch.nn.NLLLoss2d(**legacy)
    assert isinstance(ours, nn.NLLLoss) and ours.reduction == theirs.reduction
    logits = normal(2, 4, 3, 5, dtype="float64")
    target = np.random.default_rng(0).integers(0, 4, (2, 3, 5))
    assert_layer_matches_torch(torch, ours, theirs, [logits, target], **F64)


@pytest.mark.parametrize(("dims", "size"), [(2, (3, 5)), (2, (2, 4)), (2, (None, 3)), (1, 3), (1, 4)])
@pytest.mark.parametrize("return_indices", [False, True])
def test_adaptive_max_pool_modules_take_any_size_and_return_indices_as_torch(dims, size, return_indices):
    """``nn.AdaptiveMaxPool1d/2d`` and their ``F`` functions: uneven windows (they refused before unless the size divided
    the input's) and ``return_indices=True``, values, indices and the input gradient as PyTorch's."""
    torch = require("torch")
    name = f"AdaptiveMaxPool{dims}d"
    ours, theirs = getattr(nn, name)(size, return_indices=return_indices), getattr(torch.nn, name)(size, return_indices=return_indices)
    x = normal(*((2, 3, 7, 8) if dims == 2 else (2, 3, 10)), dtype="float64")
    values = (lambda module, t: module(t)[0]) if return_indices else None
    assert_layer_matches_torch(torch, ours, theirs, [x], call=values)
    if return_indices:
        indices = kiln.compile(lambda t: ours(t)[1], batch_dim=None)(x)
        np.testing.assert_array_equal(indices, theirs(torch.tensor(x))[1].numpy())
