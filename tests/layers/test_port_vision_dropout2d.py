"""``Dropout2d`` on a 2-D ``(N, C)`` input, as pytorch/examples' mnist_rnn applies it to an LSTM's last output: PyTorch
warns and drops each element alone (its feature dropout has no spatial dims to share a draw); kiln did refuse it."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import KilnError
from oracles import require_torch


def test_a_2d_input_warns_and_drops_element_by_element_at_rate_p():
    kiln.manual_seed(0)
    p, x = 0.3, np.random.default_rng(0).uniform(1.0, 2.0, size=(200, 50))
    with pytest.warns(UserWarning, match="2-D input") as caught:
        out = nn.Dropout2d(p)(x).numpy()
    assert caught[0].filename == __file__  # the user's line, not kiln's
    dropped = out == 0
    assert abs(dropped.mean() - p) < 0.02, dropped.mean()
    assert not dropped.all(axis=1).any() and not dropped.all(axis=0).any()  # neither whole rows nor whole columns
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1 - p), rtol=1e-12)


def test_torch_warns_and_keeps_the_same_rate_on_a_2d_input():
    torch = require_torch()
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="2-D input"):
        theirs = torch.nn.Dropout2d(0.3)(torch.ones(200, 50, dtype=torch.float64))
    assert abs((theirs == 0).double().mean().item() - 0.3) < 0.02 and not (theirs == 0).all(dim=1).any()


def test_eager_backward_through_a_2d_dropout2d_uses_the_forward_mask():
    kiln.manual_seed(1)
    x = kiln.tensor(np.random.default_rng(1).uniform(1.0, 2.0, size=(8, 16)), requires_grad=True)
    with pytest.warns(UserWarning):
        out = F.dropout2d(x, 0.5, training=True)
    out.sum().backward()
    np.testing.assert_allclose(x.grad, out.numpy() / x.data, rtol=1e-12)


def test_eval_mode_and_a_1d_input():
    x = np.ones((4, 6))
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(np.asarray(nn.Dropout2d(0.5).eval()(x)), x)
    with pytest.raises(KilnError, match="needs a channel dim"):
        F.dropout2d(np.ones(5) * kiln.tensor(np.ones(5), requires_grad=True), 0.5)
