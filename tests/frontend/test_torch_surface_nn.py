"""``frontend/torch_nn_forms.py``: ``kiln.conv2d``, ``kiln.embedding``, ``kiln.kl_div``... called exactly as
``torch.conv2d``, ``torch.embedding``, ``torch.kl_div`` (ATen's argument orders, integer reductions and modes),
against PyTorch in float64: values and the gradients through kiln's autodiff (``tensor_parity._check``). The random
ones (dropouts) by their statistics on kiln's seed, and the errors for bad enums and embedding_bag's bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import KilnError
from kiln.frontend import torch_nn_forms
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(21)


def _normal(*shape):
    return RNG.standard_normal(shape)


def _lib(name):
    return kiln if name == "kiln" else require("torch")


def _constant(lib, values):
    """A constant made by either library (kiln.tensor in a trace, torch.tensor)."""
    return lib.tensor(np.asarray(values))


INDICES = np.array([[1, 2, 4], [5, 2, 9]])
BAG = np.array([1, 2, 4, 5, 4, 3, 2, 9])
TARGETS = np.array([1.0, -1.0, 1.0])
WEIGHTS = np.abs(_normal(3, 4))
SIGNS = np.array([[1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, 1.0, 1.0]])
CTC_TARGETS = np.array([[1, 2, 2], [3, 1, 0]])
THETA = np.array([[[0.9, 0.2, 0.1], [-0.1, 1.1, -0.2]]])
GRID = np.tanh(_normal(1, 3, 4, 2)) * 1.1

def _pos_weight(lib):
    return _loss_constant(lib, [0.5, 2.0, 1.0, 3.0])


def _loss_constant(lib, values):
    """A constant of a kiln loss is an array; torch's a tensor."""
    return np.asarray(values) if lib is kiln else lib.tensor(np.asarray(values))


CASES = {  # name: (function of (library, *arrays), arrays)
    "conv1d": (lambda lib, x, w, b: lib.conv1d(x, w, b, 2, 1), (_normal(2, 3, 7), _normal(4, 3, 3), _normal(4))),
    "conv2d": (lambda lib, x, w: lib.conv2d(x, w, None, 1, 1, 2, 1), (_normal(1, 2, 6, 6), _normal(3, 2, 3, 3))),
    "conv3d": (lambda lib, x, w: lib.conv3d(x, w, None, 1, 0, 1, 2), (_normal(1, 4, 3, 4, 4), _normal(2, 2, 2, 2, 2))),
    "conv_transpose1d": (lambda lib, x, w: lib.conv_transpose1d(x, w, None, 2, 1, 1), (_normal(2, 3, 5), _normal(3, 2, 3))),
    "conv_transpose2d": (lambda lib, x, w, b: lib.conv_transpose2d(x, w, b, 2), (_normal(1, 2, 3, 3), _normal(2, 3, 3, 3), _normal(3))),
    "conv_transpose3d": (lambda lib, x, w: lib.conv_transpose3d(x, w, None, 1, 0, 0, 1, 2), (_normal(1, 2, 3, 3, 3), _normal(2, 1, 2, 2, 2))),
    "convolution": (lambda lib, x, w, v: (lib.convolution(x, w, None, (2, 1), (1, 0), (1, 2), False, (0, 0), 1),
                                          lib.convolution(x, v, None, (1, 2), (0, 1), (1, 1), True, (0, 1), 2),
                                          lib.convolution(x[:, :, 0], w[:, :, 0], None, [1], [1], [1], False, [0], 1)),
                    (_normal(2, 4, 5, 6), _normal(3, 4, 2, 2), _normal(4, 3, 2, 3))),
    "rnn_cells": (lambda lib, x, h, c, wi, wh, b: (lib.lstm_cell(x, (h, c), wi, wh, b, b * 0.5)[0], lib.lstm_cell(x, (h, c), wi, wh)[1],
                                                  lib.gru_cell(x, h, wi[:9], wh[:9], b[:9], b[3:12]), lib.rnn_tanh_cell(x, h, wi[:3], wh[:3], b[:3]),
                                                  lib.rnn_relu_cell(x, h, wi[:3], wh[:3], None, b[:3])),
                  (_normal(2, 4), _normal(2, 3), _normal(2, 3), _normal(12, 4), _normal(12, 3), _normal(12))),
    "layer_norm": (lambda lib, x, w, b: lib.layer_norm(x, (5,), w, b, 1e-5, True), (_normal(3, 4, 5), _normal(5), _normal(5))),
    "group_norm": (lambda lib, x, w, b: lib.group_norm(x, 2, w, b, 1e-5, True), (_normal(2, 4, 3), _normal(4), _normal(4))),
    "softmax_backward": (lambda lib, g, x: (lib._softmax_backward_data(g, x.softmax(2), 2, x.dtype),
                                            lib._log_softmax_backward_data(g, x.log_softmax(0), 0, x.dtype)),
                         (_normal(2, 3, 4), _normal(2, 3, 4))),
    "batch_norm": (lambda lib, x, w, b: lib.batch_norm(x, w, b, None, None, True, 0.1, 1e-5, False), (_normal(4, 3, 5), _normal(3), _normal(3))),
    "batch_norm_running": (lambda lib, x, w: lib.batch_norm(x, w, None, _constant(lib, [0.1, -0.2, 0.3]), _constant(lib, [1.5, 0.5, 2.0]),
                                                            False, 0.1, 1e-3, True), (_normal(4, 3, 5), _normal(3))),
    "instance_norm": (lambda lib, x, w, b: lib.instance_norm(x, w, b, None, None, True, 0.1, 1e-5, False), (_normal(2, 3, 5), _normal(3), _normal(3))),
    "rms_norm": (lambda lib, x, w: lib.rms_norm(x, (4, 5), w, 1e-6), (_normal(3, 4, 5), _normal(4, 5))),
    "embedding": (lambda lib, w: lib.embedding(w, _constant(lib, INDICES)), (_normal(10, 3),)),
    "embedding_padding": (lambda lib, w: lib.embedding(w, _constant(lib, INDICES), 2), (_normal(10, 3),)),
    "embedding_bag_sum": (lambda lib, w: lib.embedding_bag(w, _constant(lib, BAG), _constant(lib, [0, 3]), False, 0)[0], (_normal(10, 3),)),
    "embedding_bag_mean": (lambda lib, w: lib.embedding_bag(w, _constant(lib, BAG), _constant(lib, [0, 3]), False, 1)[0], (_normal(10, 3),)),
    "embedding_bag_max": (lambda lib, w: lib.embedding_bag(w, _constant(lib, BAG), _constant(lib, [0, 5]), False, 2)[0], (_normal(10, 3),)),
    "bilinear": (lambda lib, x, y, w, b: lib.bilinear(x, y, w, b), (_normal(3, 4), _normal(3, 5), _normal(2, 4, 5), _normal(2))),
    "prelu": (lambda lib, x, w: lib.prelu(x, w), (_normal(2, 3, 4), _normal(3))),
    # celu's alpha a power of two: torch's own backward rounds 1 / alpha to float32 (kiln's slope exp(x / alpha) is exact)
    "activations": (lambda lib, x: (lib.selu(x) + lib.celu(x, 0.5) + lib.threshold(x, 0.3, -2.0) + lib.hardshrink(x, 0.4)
                                    + lib.rrelu(x, 0.1, 0.3, False)), (_normal(3, 4),)),
    "hardshrink_method": (lambda lib, x: x.hardshrink(), (_normal(3, 4),)),
    "shuffles": (lambda lib, x: (lib.pixel_shuffle(x, 2) * 2, lib.pixel_unshuffle(x, 2), lib.channel_shuffle(x, 4),
                                 lib.native_channel_shuffle(x, 2)), (_normal(1, 8, 2, 4),)),
    "distances": (lambda lib, x, y: (lib.cosine_similarity(x, y) + lib.pairwise_distance(x, y, 3.0, 1e-6, False),
                                     lib.cosine_similarity(x, y, 0, 1e-8), lib.pairwise_distance(x, y, 1.5, 1e-6, True), lib.pdist(x, 1.5)),
                  (_normal(4, 5), _normal(4, 5))),
    "kl_div": (lambda lib, x, y: (lib.kl_div(x, y.exp(), 1), lib.kl_div(x, y, 0, log_target=True), lib.kl_div(x, y.exp(), 2)),
               (_normal(3, 4), _normal(3, 4))),
    "binary_cross_entropy_with_logits": (lambda lib, x, t: (lib.binary_cross_entropy_with_logits(x, t.sigmoid(), _loss_constant(lib, WEIGHTS), _pos_weight(lib), 0),
                                                              lib.binary_cross_entropy_with_logits(x, t.sigmoid()) * 2, lib.binary_cross_entropy_with_logits(x, t.sigmoid(), reduction=1), lib.binary_cross_entropy_with_logits(x, t.sigmoid(), None, None, 2)),
                                         (_normal(3, 4), _normal(3, 4))),
    "poisson_nll_loss": (lambda lib, x, t: (lib.poisson_nll_loss(x, t.abs() * 3, True, False, 1e-8, 1),
                                            lib.poisson_nll_loss(x.exp(), t.abs() * 3 + 1, False, True, 1e-8, 0)), (_normal(3, 4), _normal(3, 4))),
    "margin_losses": (lambda lib, x, y: (lib.margin_ranking_loss(x[0], y[0], _constant(lib, TARGETS), 0.1, 1),
                                         lib.hinge_embedding_loss(x, _constant(lib, SIGNS), 1.0, 2),
                                         lib.cosine_embedding_loss(x, y, _constant(lib, TARGETS), 0.2, 0),
                                         lib.triplet_margin_loss(x, y, x.flip(0), 1.0, 2, 1e-6, True, 1),
                                         lib.kl_div(x, y.exp()), lib.margin_ranking_loss(x, y, _constant(lib, SIGNS)),  # unreduced by default
                                         lib.hinge_embedding_loss(x, _constant(lib, SIGNS)), lib.cosine_embedding_loss(x, y, _constant(lib, TARGETS)),
                                         lib.triplet_margin_loss(x, y, x.flip(1))),
                      (_normal(3, 3), _normal(3, 3))),
    "ctc_loss": (lambda lib, x: (lib.ctc_loss(lib.log_softmax(x, 2), _constant(lib, CTC_TARGETS), [6, 5], [3, 2], 0, 1, False),
                                 lib.ctc_loss(lib.log_softmax(x, 2), _constant(lib, CTC_TARGETS), [6, 5], [3, 2]),
                                 lib.ctc_loss(lib.log_softmax(x, 2), _constant(lib, CTC_TARGETS), [6, 5], [3, 2], 0, 0, False)), (_normal(6, 2, 4),)),
    "max_pool1d": (lambda lib, x: (lib.max_pool1d(x, 3), lib.max_pool1d(x, 3, 2, 1, 1, True)), (_normal(2, 3, 9),)),
    "max_pool1d_with_indices": (lambda lib, x: lib.max_pool1d_with_indices(x, 2, [], 1, 2), (_normal(2, 3, 9),)),
    "max_pool2d": (lambda lib, x: lib.max_pool2d(x, 2, [], 0, 1, True), (_normal(1, 2, 5, 5),)),
    "max_pool3d": (lambda lib, x: lib.max_pool3d(x, (2, 1, 2), 1), (_normal(1, 2, 3, 4, 4),)),
    "avg_pool1d": (lambda lib, x: (lib.avg_pool1d(x, 3), lib.avg_pool1d(x, 3, 2, 1, True, False)), (_normal(2, 3, 8),)),
    "adaptive_pool1d": (lambda lib, x: (lib.adaptive_avg_pool1d(x, 4), *lib.adaptive_max_pool1d(x, 3)), (_normal(2, 3, 7),)),
    "constant_pad_nd": (lambda lib, x: (lib.constant_pad_nd(x, (1, 2, 0, 1), 0.5), lib.constant_pad_nd(x, [2, 1])), (_normal(2, 3, 4),)),
    "affine_grid_generator": (lambda lib, t: (lib.affine_grid_generator(t, (1, 2, 4, 5), False), lib.affine_grid_generator(t, (1, 2, 3, 3), True)), (THETA,)),
    "grid_sampler": (lambda lib, x, g: (lib.grid_sampler(x, g, 0, 0, False), lib.grid_sampler(x, g, 0, 1, True), lib.grid_sampler(x, g, 2, 2, False)),
                     (_normal(1, 2, 4, 5), GRID)),
    "grid_sampler_nearest": (lambda lib, x: lib.grid_sampler_2d(x, _constant(lib, GRID * 0.9), 1, 0, True), (_normal(1, 2, 4, 5),)),
    "grid_sampler_3d": (lambda lib, x: (lib.grid_sampler_3d(x, _constant(lib, np.linspace(-1.3, 1.3, 18).reshape(1, 1, 2, 3, 3)), 0, 2, False),
                                        lib.grid_sampler_3d(x, _constant(lib, np.linspace(1.2, -1.1, 18).reshape(1, 2, 3, 1, 3)), 1, 1, True)),
                        (_normal(1, 2, 3, 4, 5),)),
    "in_place_activations": (lambda lib, x: (lib.selu_(x * 1.0), lib.celu_(x * 1.0, 0.5), lib.threshold_(x * 1.0, 0.1, 9.0),
                                             lib.relu_(x * 1.0), lib.rrelu_(x * 1.0, 0.2, 0.3)), (_normal(3, 4),)),
    "dropouts_off": (lambda lib, x: (lib.dropout(x, 0.5, False), lib.alpha_dropout(x, 0.5, False), lib.feature_alpha_dropout(x, 0.5, False),
                                     lib.feature_dropout(x, 0.5, False), lib.dropout_(x * 1.0, 0.3, False)), (_normal(2, 3, 4),)),
}


@pytest.mark.parametrize("name", CASES)
def test_torch_nn_form_matches_torch(name):
    fn, arrays = CASES[name]
    _check(lambda *xs: fn(kiln, *xs), lambda *xs: fn(_lib("torch"), *xs), *arrays)


TESTED_ELSEWHERE = {"dropout", "alpha_dropout", "feature_alpha_dropout", "feature_dropout", "dropout_", "alpha_dropout_",
                    "feature_alpha_dropout_", "feature_dropout_"}


def test_every_form_is_torchs_name_and_is_compared_here():
    torch = require("torch")
    assert all(hasattr(torch, name) and getattr(kiln, name) is getattr(torch_nn_forms, name) for name in torch_nn_forms.__all__)
    source = "".join(str(fn.__code__.co_consts) + str(fn.__code__.co_names) for fn, _ in CASES.values())
    untested = [name for name in torch_nn_forms.__all__ if name not in source and name not in TESTED_ELSEWHERE]
    assert not untested, untested


def _run(fn, x, seed=7):
    graph = kiln.trace(fn, kiln.TensorSpec(x.shape, "float64"))
    return NumpyBackend().compile(graph)(x, np.int64(seed))


def test_dropouts_in_training_draw_from_the_step_seed():
    x = np.ones((40, 50, 3))
    dropped, in_place = _run(lambda t: (kiln.dropout(t, 0.25, True), kiln.dropout_(t * 1.0, 0.25, True)), x)
    for result in (dropped, in_place):
        assert set(np.unique(result)) == {0.0, 1 / 0.75}
        assert abs((result == 0).mean() - 0.25) < 0.02
    channels = _run(lambda t: kiln.feature_dropout(t, 0.5, True), x)[0]
    assert (channels == channels[..., :1]).all() and abs((channels == 0).mean() - 0.5) < 0.05  # whole (N, C) rows
    alpha = _run(lambda t: kiln.alpha_dropout(t.sin(), 0.2, True), x)[0]
    assert not np.allclose(alpha, np.sin(x))
    feature_alpha = _run(lambda t: kiln.feature_alpha_dropout_(t * 1.0, 0.5, True), x)[0]
    alpha_written, channels_written = _run(lambda t: (kiln.alpha_dropout_(t.sin(), 0.2, True), kiln.feature_dropout_(t * 1.0, 0.5, True)), x)
    assert len(np.unique(alpha_written)) == 2 and abs((alpha_written < 0).mean() - 0.2) < 0.02  # dropped to alpha' a (p - 1)
    assert (channels_written == channels_written[..., :1]).all() and set(np.unique(channels_written)) == {0.0, 2.0}
    assert (feature_alpha == feature_alpha[..., :1]).all() and len(np.unique(feature_alpha)) == 2


@pytest.mark.parametrize("call, message", [
    (lambda x: kiln.kl_div(x, x, 3), r"reduction must be one of 0 \(none\), 1 \(mean\), 2 \(sum\), got 3"),
    (lambda x: kiln.grid_sampler(x.reshape(1, 1, 3, 4), x.reshape(1, 3, 2, 2)[..., :2], 5, 0, False), "interpolation_mode must be"),
    (lambda x: kiln.embedding_bag(x, kiln.tensor(BAG), kiln.tensor([0]), False, 1)[1].sum(), "offset2bag result is ATen's backward bookkeeping"),
    (lambda x: kiln.feature_dropout(x[0], 0.5, True), "requires at least 2 dimensions"),
    (lambda x: kiln.gru_cell(x[0], x[0, :1], x, x[:, :1]), r"take a batch \(N, input_size\)"),
    (lambda x: kiln.convolution(x, x, None, 1, 0, 1, False, 0, 1), "1 to 3 spatial dims"),
])
def test_bad_arguments_name_the_problem_and_the_line(call, message):
    with pytest.raises(KilnError, match=message) as error:
        kiln.trace(call, kiln.TensorSpec((3, 4), "float64"))
    assert "test_torch_surface_nn.py" in str(error.value)
