"""Slicing a fixed-size dim with a symbolic bound (``gram_style[:n_batch]`` where ``n_batch`` is the traced batch ``N``)
is refused at the user's line with what to do, instead of Python's ``slice.indices`` TypeError; the same slice with
static shapes (``batch_dim=None``) compiles and matches NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import TraceError

TABLE = np.arange(12.0).reshape(4, 3)


def _loss(out, x):
    n_batch = out.shape[0]
    return ((out - kiln.tensor(TABLE)[:n_batch, :]) ** 2).mean()


def _step(**options):
    kiln.manual_seed(0)
    model = nn.Linear(3, 3).double()
    return model, kiln.compile_train_step(model, _loss, kiln.optim.SGD(model.parameters(), lr=0.1), **options)


def test_a_symbolic_slice_bound_is_refused_at_the_users_line():
    _, step = _step()
    with pytest.raises(TraceError, match=r"(?s)test_port_style_symbolic_slice.py:\d+ in _loss.*cannot slice dim 0 \(size 4\)"
                                         r".*symbolic bound.*batch_dim=None"):
        step(np.ones((2, 3)), np.ones((2, 3)))


def test_with_static_shapes_the_slice_compiles():
    model, step = _step(batch_dim=None)
    x = np.linspace(0, 1, 6).reshape(2, 3)
    expected = np.mean((x @ np.asarray(model.weight.data).T + np.asarray(model.bias.data) - TABLE[:2]) ** 2)
    assert float(step(x, x)) == pytest.approx(expected, rel=1e-12)
