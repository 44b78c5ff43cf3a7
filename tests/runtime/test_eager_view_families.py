"""Eager view families after the dispatch fast paths: a write through a view of a parameter (under ``no_grad``) writes
the parameter, and views of parameters do not join the views of ordinary tensors, whose writes reach their base and
every other view (``frontend/view_writes.py``), as PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

WRITES = [lambda w: w.T.zero_(), lambda w: w.T.reshape(-1).mul_(2.0), lambda w: w.unsqueeze(0).squeeze(0).add_(1.0)]


@pytest.mark.parametrize("write", WRITES, ids=["T", "T.reshape", "unsqueeze.squeeze"])
def test_an_eager_write_through_a_view_of_a_parameter_writes_it_as_torch(write):
    torch = require_torch()
    results = []
    for lib in (torch, kiln):
        layer = lib.nn.Linear(3, 2)
        with lib.no_grad():
            layer.weight.copy_(lib.arange(6.0).reshape(2, 3))
            write(layer.weight)
        results.append(layer.weight.detach().numpy().copy())
    np.testing.assert_array_equal(results[1], results[0])


def test_views_of_parameters_do_not_join_an_ordinary_tensors_family():
    torch = require_torch()
    results = []
    for lib in (torch, kiln):
        layer = lib.nn.Linear(4, 3)
        with lib.no_grad():
            layer.weight.copy_(lib.ones(3, 4))
            layer.bias.fill_(0.5)
        x = lib.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
        view, other = x.T, x.reshape(-1)
        for _ in range(3):
            layer(x)  # weight.T each call: views of a parameter
        view.mul_(2.0)  # a write through a view of x: x and its other views see it, the layer's weight does not
        out = layer(lib.ones(2, 4))
        results.append([(x + 1).numpy().copy(), (other + 1).numpy().copy(), out.detach().numpy().copy(),
                        layer.weight.detach().numpy().copy()])
    for ours, theirs in zip(results[1], results[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
