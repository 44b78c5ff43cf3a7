"""Distributions with float16/bfloat16 parameters: the dtype constants they need (eps, tiny, the lowest finite value)
come from ``ml_dtypes.finfo`` (NumPy's finfo refuses bfloat16), and the values follow torch 2.13 in the same dtype."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import require_torch

import kiln
import kiln.distributions as D

DTYPES = {"float16": kiln.float16, "bfloat16": kiln.bfloat16}


@pytest.mark.parametrize("name", DTYPES)
def test_half_categorical_bernoulli_and_laplace_follow_torch(name):
    torch = require_torch()
    dtype, twin_dtype = DTYPES[name], getattr(torch, name)
    logits = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    ours, theirs = D.Categorical(logits=kiln.tensor(logits).to(dtype)), torch.distributions.Categorical(logits=torch.tensor(logits).to(twin_dtype))
    np.testing.assert_array_equal(ours.entropy().float().numpy(), theirs.entropy().float().numpy())
    assert ours.sample((3,)).shape == (3, 4)
    probs, value = np.array([0.3, 0.6, 0.9], np.float32), np.array([1.0, 0.0, 1.0], np.float32)
    ours_b = D.Bernoulli(probs=kiln.tensor(probs).to(dtype)).log_prob(kiln.tensor(value).to(dtype))
    theirs_b = torch.distributions.Bernoulli(probs=torch.tensor(probs).to(twin_dtype)).log_prob(torch.tensor(value).to(twin_dtype))
    assert ours_b.dtype is dtype
    np.testing.assert_allclose(ours_b.float().numpy(), theirs_b.float().numpy(), rtol=2 * float(kiln.finfo(dtype).eps))
    draws = D.Laplace(kiln.zeros(1000).to(dtype), kiln.ones(1000).to(dtype)).rsample()
    assert draws.dtype is dtype and np.isfinite(draws.float().numpy()).all()


def test_other_dtype_limits_take_bfloat16():
    """random_'s range ([0, 2^digits] with the implicit bit: 256 in bfloat16, as torch's), pinv's and matrix_rank's
    default tolerances in bfloat16."""
    x = kiln.zeros(200).bfloat16()
    x.random_()
    values = x.float().numpy()
    assert x.dtype is kiln.bfloat16 and values.min() >= 0 and 2**7 + 1 < values.max() <= 2**8 and (values == np.round(values)).all()
    a = kiln.tensor(np.array([[2.0, 0.0], [0.0, 0.5]], np.float32)).bfloat16()
    assert kiln.linalg.pinv(a).dtype is kiln.bfloat16 and int(kiln.linalg.matrix_rank(a)) == 2
