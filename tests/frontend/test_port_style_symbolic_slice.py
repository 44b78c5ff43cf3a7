"""Slicing a fixed-size dim with a symbolic bound (``gram_style[:n_batch]`` where ``n_batch`` is the traced batch ``N``)
traces as the first ``N`` rows (it was refused at the user's line); the same slice with static shapes
(``batch_dim=None``) compiles and matches NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn

TABLE = np.arange(12.0).reshape(4, 3)


def _loss(out, x):
    n_batch = out.shape[0]
    return ((out - kiln.tensor(TABLE)[:n_batch, :]) ** 2).mean()


def _step(**options):
    kiln.manual_seed(0)
    model = nn.Linear(3, 3).double()
    return model, kiln.compile_train_step(model, _loss, kiln.optim.SGD(model.parameters(), lr=0.1), **options)


def test_a_symbolic_slice_bound_traces_one_graph_for_batches_up_to_the_table():
    """``TABLE[:n_batch]`` of the symbolic batch traces (the first ``n_batch`` rows taken, as torch's export assumes
    ``n_batch <= 4``): one step serves batches of 2 and 4 and matches NumPy. It was refused at the user's line; a
    slice with another symbolic start or step still is (``test_symbolic_dim_arithmetic_vs_torch.py``)."""
    model, step = _step()
    for batch in (2, 4):
        x = np.linspace(0, 1, 3 * batch).reshape(batch, 3)
        expected = np.mean((x @ np.asarray(model.weight.data).T + np.asarray(model.bias.data) - TABLE[:batch]) ** 2)
        assert float(step(x, x)) == pytest.approx(expected, rel=1e-12)


def test_with_static_shapes_the_slice_compiles():
    model, step = _step(batch_dim=None)
    x = np.linspace(0, 1, 6).reshape(2, 3)
    expected = np.mean((x @ np.asarray(model.weight.data).T + np.asarray(model.bias.data) - TABLE[:2]) ** 2)
    assert float(step(x, x)) == pytest.approx(expected, rel=1e-12)
