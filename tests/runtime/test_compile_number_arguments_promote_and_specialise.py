"""A Python number argument of a ``kiln.compile``d function promotes as the number itself (torch's wrapped numbers:
``long_tensor * scale`` is float32, not float64), one variant serving every value; where the trace needs its value
(``if t == 0:``, ``range(n)``) it is traced as a constant per value, as ``torch.compile`` specialises a Python int,
up to ``recompile_limit`` values. Found by H1's DDPM probe (``p_sample(x, t, t_index)``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import require_torch


@pytest.mark.parametrize("dtype, number", [("int64", 2.5), ("uint8", 3), ("int32", 0.5), ("float64", 3), ("bool", 2)])
def test_a_number_argument_promotes_as_a_python_number_as_in_torch(dtype, number):
    torch = require_torch()
    x = np.arange(1, 5).astype(dtype)
    scaled = kiln.compile(lambda t, s: t * s + s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled, not eagerly
        ours = scaled(kiln.tensor(x), number)
    theirs = torch.tensor(x) * number + number
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())
    assert len([v for v in scaled.variants.values() if v is not None]) == 1


def test_one_variant_serves_every_value_of_a_number_used_as_a_value():
    scale = kiln.compile(lambda t, s: t * s)
    x = kiln.tensor(np.ones(3, np.float32))
    for s in (0.5, 2.0, -3.0):
        np.testing.assert_array_equal(np.asarray(scale(x, s)), np.full(3, s, np.float32))
    assert len(scale.variants) == 1


def _p_sample(lib):
    def p_sample(x, t, t_index):  # the DDPM tutorial's shape: a branch on the Python int
        mean = x * (1 - 0.1 * t)
        if t_index == 0:
            return mean
        return mean + 0.5 * lib.ones_like(x) * t_index

    return p_sample


def test_a_branch_on_a_number_traces_it_as_a_constant_per_value_and_matches_torch():
    torch = require_torch()
    x = np.random.default_rng(0).standard_normal((2, 3))
    compiled = kiln.compile(_p_sample(kiln))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled, not eagerly
        for t_index in (2, 1, 0, 1):
            ours = compiled(kiln.tensor(x), kiln.tensor(np.float64(t_index)), t_index)
            theirs = _p_sample(torch)(torch.tensor(x), torch.tensor(np.float64(t_index)), t_index)
            np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-15)
    assert sorted(v for values in compiled.specialized.values() for v in values) == [(0,), (1,), (2,)]


def test_past_the_recompile_limit_a_branching_number_runs_eagerly_warned_and_fullgraph_raises():
    x = kiln.tensor(np.ones((2, 3)))
    compiled = kiln.compile(_p_sample(kiln))
    with pytest.warns(UserWarning, match="recompile_limit"):
        results = [np.asarray(compiled(x, kiln.tensor(0.0), t_index)) for t_index in range(10)]
    np.testing.assert_allclose([r[0, 0] for r in results], [1.0] + [1.0 + 0.5 * t for t in range(1, 10)])
    strict = kiln.compile(_p_sample(kiln), fullgraph=True)
    for t_index in range(8):
        strict(x, kiln.tensor(0.0), t_index)
    with pytest.raises(KilnError, match="recompile_limit"):
        strict(x, kiln.tensor(0.0), 8)
