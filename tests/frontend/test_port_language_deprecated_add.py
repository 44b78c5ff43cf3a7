"""PyTorch's deprecated overloads ``x.add_(alpha, other)`` and ``x.sub_(alpha, other)``, as older versions of
word_language_model's main.py update the weights (``p.data.add_(-lr, p.grad.data)``): values and gradients against
torch in float64, eager, on a parameter's ``.data`` and traced, with PyTorch's warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import TraceError
from oracles import require_torch


def _quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


def test_the_old_sgd_update_through_data_matches_torchs():
    torch = require_torch()
    w = np.array([[1.0, -2.0], [0.5, 3.0]])
    ours, theirs = nn.Parameter(w.copy()), torch.nn.Parameter(torch.tensor(w))
    for lib, p in ((kiln, ours), (torch, theirs)):
        (p * p * p).sum().backward()
        _quiet(lambda: p.data.add_(-0.1, p.grad.data))
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-15)


@pytest.mark.parametrize("method", ["add_", "sub_"])
def test_values_and_gradients_match_torchs_eagerly_and_traced(method):
    torch = require_torch()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))

    def f(lib, a, b):
        out = a * 1.0
        getattr(out, method)(-2.5, b)
        return (out * out).sum()

    a, b = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    expected = _quiet(lambda: f(torch, a, b))
    expected.backward()
    eager = _quiet(lambda: f(kiln, kiln.tensor(x), kiln.tensor(y)))
    assert eager.item() == pytest.approx(expected.item(), rel=1e-14)
    grads = _quiet(lambda: kiln.grad(lambda p, q: f(kiln, p, q), argnums=(0, 1))(x, y))
    np.testing.assert_allclose(grads[0], a.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads[1], b.grad.numpy(), rtol=1e-12)


def test_the_overload_warns_as_torchs_and_a_wrong_call_says_what_it_takes():
    x = kiln.tensor(np.ones(2))
    with pytest.warns(UserWarning, match="This overload of add_ is deprecated"):
        x.add_(2.0, kiln.tensor(np.ones(2)))
    np.testing.assert_array_equal(x.numpy(), [3.0, 3.0])
    with pytest.raises(TraceError, match=r"add_ takes \(other, \*, alpha=number\)"):
        x.add_(kiln.tensor(np.ones(2)), kiln.tensor(np.ones(2)))
