"""``torch.where(condition, a, b)`` with two Python numbers gives a tensor of torch's dtype for them (the default float,
int64, bool), eagerly and compiled: kiln gave the condition's bool, so Hugging Face T5's float16 clamp
``torch.where(torch.isinf(h).any(), torch.finfo(h.dtype).max - 1000, torch.finfo(h.dtype).max)`` was ``True`` and
``torch.clamp(h, min=-clamp_value, ...)`` raised NumPy's 'boolean negative' TypeError."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

BRANCHES = [(1.5, 2.5), (1, 2.5), (2.5, 1), (1, 2), (True, False), (True, 2), (0.5, True), (-3, 65504.0)]


def _where(lib, condition, a, b, compiled=False):
    if compiled and lib is kiln:
        return np.asarray(kiln.compile(lambda c: kiln.where(c, a, b))(condition))
    return lib.where(condition, a, b).numpy()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("a, b", BRANCHES)
def test_where_of_two_numbers_as_torch(a, b, compiled, default_dtype):
    torch = require_torch()
    mask = np.array([[True, False, True], [False, False, True]])
    ours = _where(kiln, kiln.tensor(mask), a, b, compiled)
    theirs = _where(torch, torch.tensor(mask), a, b)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def test_t5_float16_clamp_as_torch():
    torch = require_torch()
    h = np.array([[1.0, -np.inf, 3.0]], np.float16)
    results = []
    for lib in (kiln, torch):
        hidden_states = lib.tensor(h)
        clamp_value = lib.where(lib.isinf(hidden_states).any(), lib.finfo(hidden_states.dtype).max - 1000,
                                lib.finfo(hidden_states.dtype).max)
        results.append(lib.clamp(hidden_states, min=-clamp_value, max=clamp_value).numpy())
    assert results[0].dtype == results[1].dtype == np.float16
    np.testing.assert_array_equal(results[0], results[1])
