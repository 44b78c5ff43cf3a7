"""Alpha dropout (per element and per channel) and Gumbel-softmax: draws that are a pure function of the step's seed,
PyTorch's statistics in training (alpha dropout keeps a SELU-normalized input's mean 0 and variance 1; Gumbel-softmax
samples each class with its softmax probability), the identity in eval mode, and the straight-through gradient."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import KilnError
from kiln.frontend.functional_extra_random import ALPHA_PRIME
from oracles import require


def _seeded(fn, shape, dtype="float64"):
    """``fn`` traced on ``shape``, run as ``run(x, seed)`` (the graph's seed input comes last)."""
    run = NumpyBackend().compile(kiln.trace(fn, kiln.TensorSpec(shape, dtype)))
    return lambda x, seed: run(x, np.int64(seed))[0]


# Alpha dropout -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("function", [F.alpha_dropout, F.feature_alpha_dropout])
def test_alpha_dropout_keeps_a_normalized_input_normalized(function, p):
    x = np.random.default_rng(0).standard_normal((400, 250, 2))
    run = _seeded(lambda t: function(t, p, training=True), x.shape)
    first, again, other = run(x, 7), run(x, 7), run(x, 8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert abs(first.mean()) < 0.02 and abs(first.var() - 1) < 0.03, (first.mean(), first.var())
    a = 1 / np.sqrt((ALPHA_PRIME ** 2 * p + 1) * (1 - p))
    dropped = np.isclose(first, ALPHA_PRIME * a * (p - 1), rtol=1e-12)
    assert abs(dropped.mean() - p) < 0.01
    np.testing.assert_allclose(first[~dropped], a * x[~dropped] + ALPHA_PRIME * a * p, rtol=1e-12)


def test_alpha_dropout_drops_elements_and_feature_alpha_dropout_whole_channels():
    x = np.random.default_rng(1).standard_normal((64, 40, 6))
    element = _seeded(lambda t: F.alpha_dropout(t, 0.3, True), x.shape)(x, 3)
    channel = _seeded(lambda t: F.feature_alpha_dropout(t, 0.3, True), x.shape)(x, 3)
    dropped_value = ALPHA_PRIME * (0.3 - 1) / np.sqrt((ALPHA_PRIME ** 2 * 0.3 + 1) * 0.7)
    per_element, per_channel = np.isclose(element, dropped_value), np.isclose(channel, dropped_value)
    assert (per_channel.all(axis=2) == per_channel.any(axis=2)).all(), "a channel is dropped whole or not at all"
    assert (per_element.any(axis=2) & ~per_element.all(axis=2)).mean() > 0.5, "elements are dropped one by one"


def test_alpha_dropout_is_the_identity_in_eval_mode_and_as_torch_at_p_0_and_1():
    torch = require("torch")
    x = np.random.default_rng(2).standard_normal((3, 4, 5))
    for module, reference in [(nn.AlphaDropout(0.4), torch.nn.AlphaDropout(0.4)), (nn.FeatureAlphaDropout(0.2), torch.nn.FeatureAlphaDropout(0.2))]:
        assert repr(module) == repr(reference)
        graph = kiln.trace(module.eval(), kiln.TensorSpec(("N", 4, 5), "float64"))
        assert not graph.ops and graph.outputs == graph.inputs
        np.testing.assert_array_equal(kiln.compile(module)(x), reference.eval()(torch.tensor(x)).numpy())
    assert not kiln.trace(lambda t: F.alpha_dropout(t, 0.5), kiln.TensorSpec((2, 3))).ops, "F's training defaults to False"
    assert not kiln.trace(lambda t: F.alpha_dropout(t, 0.0, True), kiln.TensorSpec((2, 3))).ops
    everything = NumpyBackend().compile(kiln.trace(lambda t: F.alpha_dropout(t, 1.0, True), kiln.TensorSpec(x.shape, "float64")))
    np.testing.assert_array_equal(everything(x)[0], torch.nn.functional.alpha_dropout(torch.tensor(x), 1.0, True).numpy())


def test_alpha_dropout_traces_in_a_training_step_and_checks_its_arguments():
    model = nn.Sequential(nn.Linear(6, 8), nn.SELU(), nn.AlphaDropout(0.2), nn.Linear(8, 3))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.0), seed=1)
    x, y = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32), np.arange(16) % 3
    losses = [step(x, y) for _ in range(3)]
    assert len(set(losses)) == 3, "lr=0: only a fresh mask per step changes the loss"
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.AlphaDropout(1.5)
    with pytest.raises(KilnError, match=r"(?s)test_extra_random_layers\.py:\d+.*at least 2 dimensions"):
        kiln.trace(lambda t: F.feature_alpha_dropout(t, 0.5, True), kiln.TensorSpec((5,)))


# Gumbel-softmax ------------------------------------------------------------------------------------------------------

LOGITS = np.log(np.array([0.5, 0.3, 0.15, 0.05]))


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_gumbel_softmax_hard_samples_classes_with_their_softmax_probabilities(tau):
    logits = np.tile(LOGITS, (20000, 1))
    run = _seeded(lambda t: F.gumbel_softmax(t, tau=tau, hard=True), logits.shape)
    sample = run(logits, 5)
    np.testing.assert_array_equal(sample, run(logits, 5))
    assert not np.array_equal(sample, run(logits, 6))
    assert set(np.unique(sample)) == {0.0, 1.0} and (sample.sum(-1) == 1).all()
    np.testing.assert_allclose(sample.mean(0), np.exp(LOGITS), atol=0.012)


def test_gumbel_softmax_soft_samples_are_distributions_whose_argmax_follows_the_softmax():
    logits = np.tile(LOGITS, (20000, 1)).T.copy()  # classes along dim 0
    soft = _seeded(lambda t: F.gumbel_softmax(t, tau=0.7, dim=0), logits.shape)(logits, 9)
    np.testing.assert_allclose(soft.sum(0), 1.0, rtol=1e-12)
    counts = np.bincount(soft.argmax(0), minlength=4) / soft.shape[1]
    np.testing.assert_allclose(counts, np.exp(LOGITS), atol=0.012)


def test_gumbel_softmax_hard_gradient_is_the_soft_one():
    """Straight through: the same draws (same seed and stream) give the hard sample the soft sample's gradient."""
    logits = np.random.default_rng(3).standard_normal((6, 5))
    weights = np.random.default_rng(4).standard_normal((6, 5))

    def gradient(hard):
        def loss(t):
            return (F.gumbel_softmax(t, tau=0.8, hard=hard) * weights).sum()
        context_graph = kiln.trace(lambda t: kiln.grad(loss)(t), kiln.TensorSpec(logits.shape, "float64"))
        return NumpyBackend().compile(context_graph)(logits, np.int64(2))[0]

    soft, hard = gradient(False), gradient(True)
    np.testing.assert_allclose(hard, soft, rtol=1e-12)
    assert np.abs(soft).max() > 1e-3


def test_gumbel_softmax_warns_for_eps_as_torch():
    with pytest.warns(UserWarning, match="deprecated"):
        kiln.trace(lambda t: F.gumbel_softmax(t, eps=1e-3), kiln.TensorSpec((2, 3)))
