"""``torch.multinomial``'s refusals, in torch 2.13's words at the user's line: no samples asked, a NaN, infinite or
negative weight, a row whose weights sum to zero (word2vec's ``torch.multinomial(unigram ** 0.75, n,
replacement=True)`` over counts that are all zero), more samples than categories without replacement. kiln drew from
such weights silently (index 1 from ``[-1, 2]``, index 0 from ``[0, 0]``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

CASES = {
    "no samples": ([1.0, 2.0], 0, True),
    "negative samples": ([1.0, 2.0], -1, True),
    "nan": ([float("nan"), 1.0], 1, True),
    "inf": ([float("inf"), 1.0], 1, True),
    "negative weight": ([-1.0, 2.0], 1, True),
    "a row of zeros": ([[0.5, 0.5], [0.0, 0.0]], 1, True),
    "all zero, without replacement": ([0.0, 0.0], 1, False),
    "more samples than categories": ([0.2, 0.8], 3, False),
}


@pytest.mark.parametrize("weights, num_samples, replacement", CASES.values(), ids=CASES.keys())
def test_bad_distributions_are_refused_as_torch(weights, num_samples, replacement):
    torch = require_torch()
    with pytest.raises(RuntimeError) as theirs:
        torch.multinomial(torch.tensor(weights), num_samples, replacement=replacement)
    with pytest.raises(RuntimeError) as ours:
        kiln.multinomial(kiln.tensor(weights), num_samples, replacement=replacement)
    assert str(theirs.value) in str(ours.value) and "test_multinomial_checks_vs_torch.py" in str(ours.value)


def test_zero_weights_beside_positive_ones_still_draw_as_torch():
    torch = require_torch()
    weights = [0.1, 0.0, 0.5, 0.4]
    ours = kiln.multinomial(kiln.tensor(weights), 4).tolist()
    theirs = torch.multinomial(torch.tensor(weights), 4).tolist()
    assert ours[-1] == theirs[-1] == 1 and sorted(ours) == sorted(theirs) == [0, 1, 2, 3]  # the zero one comes last
    np.testing.assert_array_equal(np.bincount(kiln.multinomial(kiln.tensor(weights), 50, replacement=True).numpy(),
                                              minlength=4)[1], 0)
