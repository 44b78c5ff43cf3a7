"""``kiln.distributions.OneHotCategorical`` (and ``OneHotCategoricalStraightThrough``) against torch's, in float64:
log_prob, entropy, the moments, mode, probs/logits, enumerate_support and the KL of a pair, values and gradients to
1e-10 (``check_against_torch``: traced, compiled and ``kiln.grad``); samples are one-hot, follow ``probs`` and carry
no gradient, ``rsample``'s straight-through gradient is ``probs``'; the submodules DreamerV2 reaches them through
(``torchd.one_hot_categorical``, ``torchd.kl``, ``torchd.independent``). kiln had none of them (AttributeError; found by
the Dreamer probe, ``tests/e2e/test_porting_probes_td3_dreamer_dt.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.distributions as kd
from distributions.test_distributions_vs_torch import check_against_torch
from oracles import require_torch

RNG = np.random.default_rng(4)
LOGITS, PROBS = RNG.standard_normal((3, 2, 4)), RNG.uniform(0.1, 2.0, (3, 2, 4))
VALUES = np.eye(4)[RNG.integers(0, 4, (5, 3, 2))]  # (5, 3, 2, 4) one-hot: a sample shape of 5

CASES = {
    "logits.log_prob": (lambda M, l, x: M.OneHotCategorical(logits=l).log_prob(x), [LOGITS], [VALUES]),
    "probs.log_prob": (lambda M, p, x: M.OneHotCategorical(probs=p).log_prob(x), [PROBS], [VALUES[0]]),
    "logits.entropy": (lambda M, l: M.OneHotCategorical(logits=l).entropy(), [LOGITS], []),
    "probs.moments": (lambda M, p: M.OneHotCategorical(probs=p).mean + 3 * M.OneHotCategorical(probs=p).variance,
                      [PROBS], []),
    "logits.probs_and_logits": (lambda M, l: M.OneHotCategorical(logits=l).probs * M.OneHotCategorical(logits=l).logits,
                                [LOGITS], []),
    "independent.log_prob": (lambda M, l, x: M.Independent(M.OneHotCategorical(logits=l), 1).log_prob(x), [LOGITS],
                             [VALUES]),
    "kl": (lambda M, a, b: M.kl_divergence(M.OneHotCategorical(logits=a), M.OneHotCategorical(probs=b)), [LOGITS, PROBS], []),
    "independent.kl": (lambda M, a, b: M.kl.kl_divergence(M.independent.Independent(M.one_hot_categorical.OneHotCategorical(logits=a), 1),
                                                          M.Independent(M.OneHotCategorical(logits=b), 1)), [LOGITS, LOGITS[::-1].copy()], []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_are_torchs(name):
    check_against_torch(*CASES[name])


def _both(fn):
    torch = require_torch()
    return fn(kiln, kd), fn(torch, torch.distributions)


def test_shapes_mode_and_support_are_torchs():
    def describe(lib, M):
        dist = M.OneHotCategorical(logits=lib.tensor(LOGITS))
        support = dist.enumerate_support()
        return (tuple(dist.batch_shape), tuple(dist.event_shape), tuple(dist.param_shape), tuple(support.shape),
                np.asarray(dist.mode), np.asarray(support), tuple(dist.enumerate_support(expand=False).shape),
                tuple(dist.expand((2, 3, 2)).batch_shape), dist.has_rsample, dist.has_enumerate_support,
                M.OneHotCategoricalStraightThrough(logits=lib.tensor(LOGITS)).has_rsample)

    ours, theirs = _both(describe)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(mine, reference)


def test_samples_are_one_hot_follow_probs_and_have_no_gradient():
    probs = np.array([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]])
    logits = kiln.tensor(np.log(probs), requires_grad=True)
    samples = kd.OneHotCategorical(logits=logits).sample((4000,))
    values = np.asarray(samples)
    assert values.shape == (4000, 2, 3) and samples.dtype == kiln.float64 and not samples.requires_grad
    assert set(np.unique(values)) == {0.0, 1.0} and np.all(values.sum(-1) == 1)
    np.testing.assert_allclose(values.mean(0), probs, atol=0.03)


def test_straight_through_rsample_is_the_sample_with_the_gradient_of_probs_as_torch():
    """``OneHotCategoricalStraightThrough.rsample`` and DreamerV2's ``OneHotDist.sample`` (``sample += probs -
    probs.detach()``, in place on the drawn sample): the sample's values, ``probs``' gradient."""
    torch = require_torch()
    weights = RNG.standard_normal((3, 2, 4))
    for straight_through in ("rsample", "in place"):
        grads = []
        for lib, M in ((kiln, kd), (torch, torch.distributions)):
            logits = lib.tensor(LOGITS, requires_grad=True)
            if straight_through == "rsample":
                sample = M.OneHotCategoricalStraightThrough(logits=logits).rsample()
            else:
                dist = M.OneHotCategorical(logits=logits)
                sample = dist.sample()
                sample += dist.probs - dist.probs.detach()
            np.testing.assert_allclose(np.asarray(sample.detach()).sum(-1), 1.0)
            (sample * lib.tensor(weights)).sum().backward()
            grads.append(np.asarray(logits.grad))
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-10, atol=1e-14)


def test_log_prob_refuses_a_value_that_is_not_one_hot_as_torch():
    torch = require_torch()
    value = np.array([[1.0, 1.0, 0.0, 0.0]] * 2)
    with pytest.raises(ValueError, match="one-hot"):
        kd.OneHotCategorical(logits=kiln.tensor(LOGITS[0])).log_prob(kiln.tensor(value))
    with pytest.raises(ValueError):
        torch.distributions.OneHotCategorical(logits=torch.tensor(LOGITS[0])).log_prob(torch.tensor(value))


def test_the_submodules_and_constraint_are_torchs_names():
    torch = require_torch()
    for name in ("one_hot_categorical", "kl", "independent", "categorical", "mixture_same_family"):
        theirs, ours = getattr(torch.distributions, name), getattr(kd, name)
        assert set(ours.__all__) <= set(dir(theirs)), name
    assert kd.constraints.one_hot.event_dim == torch.distributions.constraints.one_hot.event_dim == 1
    checked = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_array_equal(kd.constraints.one_hot.check(checked),
                                  torch.distributions.constraints.one_hot.check(torch.tensor(checked)).numpy())
