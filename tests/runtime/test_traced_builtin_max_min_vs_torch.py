"""Python's ``max``/``min`` of traced scalars inside a ``kiln.compile``d function pick as eager Python does
(``frontend/traced_builtins.py``): transformers' Adafactor's ``max(eps, state["RMS"])`` raised that a traced tensor has
no truth value, so a ``fullgraph`` step failed and the others ran eagerly."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest

import kiln
from oracles import libraries


def _picks(x, y, scale):
    x, y = x * scale, y * scale  # from a parameter: values no guard can read before the graph runs
    rms = x.pow(2).mean().sqrt()
    return [
        max(1e-3, rms), min(rms, 0.5), max(x.sum(), y.sum(), 0.25), min([y.max(), x.min()]), max((2, rms)),
        max(x[0], x[1]), min(y[0], 0.0),
    ]


def _plain(x):
    """Calls that are the builtin's inside a trace too."""
    return x * (max(3, 4) + min([1.5, 2.5]) + max(range(4)) + len(max("ab", "c", key=len)) + min([], default=-1.0))


CASES = [([0.0, 0.0], [0.25, 0.1]), ([1.0, 3.0], [0.25, 0.1]), ([math.nan, 1.0], [0.25, -0.0]),
         ([0.5, 0.5], [math.inf, -math.inf]), ([-0.0, 0.0], [0.0, -0.0])]


@pytest.mark.parametrize("x, y", CASES)
def test_max_min_of_traced_scalars_as_eager_python(float64_default, x, y):
    torch, _, _ = libraries("torch")
    expected = _picks(torch.tensor(x), torch.tensor(y), torch.nn.Parameter(torch.ones(())))
    scale = kiln.nn.Parameter(kiln.ones(()))  # requires grad: its values are unknown until the graph runs
    compiled = kiln.compile(lambda x, y: _picks(x, y, scale), fullgraph=True)
    got = compiled(kiln.tensor(x), kiln.tensor(y))
    for mine, theirs in zip(got, expected, strict=True):
        mine, theirs = float(mine.item()), float(theirs.item() if isinstance(theirs, torch.Tensor) else theirs)
        np.testing.assert_equal(mine, theirs)
        assert math.copysign(1.0, mine) == math.copysign(1.0, theirs)  # which zero Python kept


def test_the_builtins_are_restored_after_a_trace(float64_default):
    assert kiln.compile(_plain, fullgraph=True)(kiln.tensor([1.0])).item() == 4 + 1.5 + 3 + 2 - 1.0
    assert builtins.max.__module__ == "builtins"
    assert builtins.min.__module__ == "builtins"


def test_a_several_element_tensor_is_still_refused_as_torch(float64_default):
    with pytest.raises(RuntimeError, match="ambiguous"):
        kiln.compile(lambda x: max(x, 0.0), fullgraph=True)(kiln.tensor([1.0, 2.0]))
