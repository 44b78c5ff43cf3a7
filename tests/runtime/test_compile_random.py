"""``kiln.compile(fn, seed=s)`` lets ``fn`` draw random numbers (a policy's sample, dropout), fresh on every call and
replayed by the same seed; without a seed a random op is an error, so a model left in training mode is caught."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.distributions import Categorical

PROBABILITIES = np.array([0.7, 0.2, 0.1])
DRAWS = 20000


def sample(seed: int):
    return kiln.compile(lambda logits: Categorical(logits=logits).sample(), seed=seed)


def test_samples_follow_the_distribution_and_each_call_draws_anew():
    draw = sample(0)
    logits = np.log(np.tile(PROBABILITIES, (DRAWS, 1)))
    first, second = draw(logits), draw(logits)
    frequencies = np.bincount(first, minlength=3) / DRAWS
    standard_errors = np.sqrt(PROBABILITIES * (1 - PROBABILITIES) / DRAWS)
    assert np.all(np.abs(frequencies - PROBABILITIES) < 5 * standard_errors)
    assert 0.4 < (first != second).mean() < 0.55  # two independent draws differ with probability 1 - sum p^2 = 0.46
    assert draw.calls == 2


def test_the_same_seed_replays_and_another_seed_differs():
    logits = np.log(np.tile(PROBABILITIES, (500, 1)))
    a, b, c = sample(3), sample(3), sample(4)
    runs = [(a(logits), a(logits)), (b(logits), b(logits)), (c(logits), c(logits))]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert (runs[0][0] != runs[2][0]).any()


def test_dropout_in_training_mode_draws_after_the_parameters():
    """A Linear then Dropout(0.5): every output is 0 or twice the eval-mode output, about half of each."""
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, dtype="float64"), nn.Dropout(0.5))
    x = np.random.default_rng(0).standard_normal((2000, 4))
    expected = kiln.compile(model.eval())(x)
    got = kiln.compile(model.train(), seed=7)(x)
    kept = got != 0
    np.testing.assert_allclose(got[kept], 2 * expected[kept], rtol=1e-12)
    assert 0.45 < kept.mean() < 0.55


def test_without_a_seed_a_random_op_is_an_error_that_says_what_to_do():
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    with pytest.raises(kiln.KilnError, match=r"random ops .*model.eval\(\) first, or pass kiln.compile\(fn, seed=0\)"):
        kiln.compile(model)(np.ones((2, 4), np.float32))


def test_a_pytorch_style_call_without_a_seed_draws_from_kilns_generator_as_torch_compile():
    model = nn.Sequential(nn.Linear(4, 3, dtype="float64"), nn.Dropout(0.5)).train()
    x = kiln.tensor(np.random.default_rng(0).standard_normal((2000, 4)))
    compiled = kiln.compile(model)
    with kiln.no_grad(), warnings.catch_warnings():  # a forward-only call (MC dropout at inference, say)
        warnings.simplefilter("error")  # compiled, not eagerly
        expected = np.asarray(model[0](x))  # the Linear alone, eagerly
        kiln.manual_seed(5)
        first, second = np.asarray(compiled(x)), np.asarray(compiled(x))
        kiln.manual_seed(5)
        again = np.asarray(compiled(x))
    kept = first != 0
    np.testing.assert_allclose(first[kept], 2 * expected[kept], rtol=1e-12)
    assert 0.45 < kept.mean() < 0.55 and (kept != (second != 0)).any()
    np.testing.assert_array_equal(first, again)
