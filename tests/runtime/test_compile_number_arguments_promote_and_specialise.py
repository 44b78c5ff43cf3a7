"""A Python number argument of a ``kiln.compile``d function promotes as the number itself (torch's wrapped numbers:
``long_tensor * scale`` is float32, not float64), one variant serving every value; where the trace needs its value
(``if t == 0:``, ``range(n)``) the trace specializes on what it read, guarded (a variant per branch, per loop count),
as ``torch.compile`` specialises a Python int, up to ``recompile_limit`` variants. Found by H1's DDPM probe (``p_sample(x, t, t_index)``)."""

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


def test_a_branch_on_a_number_traces_a_variant_per_branch_and_matches_torch():
    """The branch reads ``t_index == 0``: specialized on that value and guarded (``frontend/value_guards.py``), so
    one variant serves every ``t_index`` but 0."""
    torch = require_torch()
    x = np.random.default_rng(0).standard_normal((2, 3))
    compiled = kiln.compile(_p_sample(kiln))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled, not eagerly
        for t_index in (2, 1, 0, 1, 3, 0):
            ours = compiled(kiln.tensor(x), kiln.tensor(np.float64(t_index)), t_index)
            theirs = _p_sample(torch)(torch.tensor(x), torch.tensor(np.float64(t_index)), t_index)
            np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-15)
    assert compiled.trace_count == 2


def _repeated(x, times):
    for _ in range(times):  # the number's value decides the graph: a variant per value
        x = x * 2
    return x


def test_a_number_the_graph_needs_the_value_of_traces_a_variant_per_value():
    x = kiln.tensor(np.ones((2, 3)))
    compiled = kiln.compile(_repeated)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled, not eagerly
        results = [np.asarray(compiled(x, times))[0, 0] for times in (2, 0, 3, 2)]
    assert results == [4.0, 1.0, 8.0, 4.0]
    assert sum(len(earlier) for earlier in compiled.superseded.values()) + len(compiled.variants) == 3


def test_past_the_recompile_limit_a_number_read_as_a_value_runs_eagerly_warned_and_fullgraph_raises():
    x = kiln.tensor(np.ones((2, 3)))
    compiled = kiln.compile(_repeated)
    with pytest.warns(UserWarning, match="recompile_limit"):
        results = [np.asarray(compiled(x, times))[0, 0] for times in range(10)]
    assert results == [2.0**times for times in range(10)]
    strict = kiln.compile(_repeated, fullgraph=True)
    for times in range(8):
        strict(x, times)
    with pytest.raises(KilnError, match="recompile_limit.*differs at every call"):
        strict(x, 8)


def _numpy_scaled(x, scale):
    return x * float(np.asarray(scale) ** 2)  # NumPy reads the number: the trace needs it as a constant


def test_a_number_numpy_reads_is_traced_as_a_constant_per_value():
    x = kiln.tensor(np.ones(3))
    compiled = kiln.compile(_numpy_scaled)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled, not eagerly
        results = [np.asarray(compiled(x, scale))[0] for scale in (2, 3, 2)]
    assert results == [4.0, 9.0, 4.0]
    assert sorted(v for values in compiled.specialized.values() for v in values) == [(2,), (3,)]
