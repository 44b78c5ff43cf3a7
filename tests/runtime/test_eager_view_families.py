"""Eager view families after the dispatch fast paths: every view of a parameter shares one member-less family, which
must still refuse writes through it, and must not join the views of ordinary tensors (whose writes mark the rest of
their family stale)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import TraceError


@pytest.mark.parametrize("write", [lambda w: w.T.zero_(), lambda w: w.T.reshape(-1).mul_(2.0),
                                   lambda w: w.unsqueeze(0).squeeze(0).add_(1.0)], ids=["T", "T.reshape", "unsqueeze.squeeze"])
def test_an_eager_write_through_a_view_of_a_parameter_is_refused_and_leaves_it_alone(write):
    layer = nn.Linear(3, 2)
    before = np.array(layer.weight.data)
    with kiln.no_grad(), pytest.raises(TraceError, match="writes through a view of a parameter"):
        write(layer.weight)
    np.testing.assert_array_equal(layer.weight.data, before)


def test_views_of_parameters_do_not_join_an_ordinary_tensors_family():
    layer = nn.Linear(4, 3)
    x = kiln.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    view, other = x.T, x.reshape(-1)
    for _ in range(3):
        layer(x)  # weight.T each call: views of a parameter
    view.mul_(2.0)  # a write through a view of x: x and its other views go stale, not the layer's weight
    with pytest.raises(TraceError, match="shares its storage"):
        x + 1
    with pytest.raises(TraceError, match="shares its storage"):
        other + 1
    np.testing.assert_allclose(np.asarray(view), np.arange(12, dtype=np.float32).reshape(3, 4).T * 2)
    out = layer(kiln.tensor(np.ones((2, 4), np.float32)))  # the parameter's views stay readable
    np.testing.assert_allclose(np.asarray(out), np.ones((2, 4), np.float32) @ np.asarray(layer.weight.data).T
                               + np.asarray(layer.bias.data), rtol=1e-6)
