"""A uint8 mask (pytorch-crf's ``mask.byte()``) works as PyTorch's deprecated form does, with its warnings:
``torch.where(m, a, b)``, ``a.where(m, b)``, ``x[m]`` and ``x[m] = v`` pick where ``m != 0``. ``where`` used to refuse
it, and ``x[m]`` silently gathered the rows numbered by its 0s and 1s."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

MASK = np.array([[1, 0, 1], [0, 0, 1]], np.uint8)
VALUES = np.random.default_rng(0).standard_normal((2, 3))


def _where_and_gradient(lib, form):
    x = lib.tensor(VALUES, requires_grad=True)
    mask = lib.tensor(MASK)
    with warnings.catch_warnings(record=True) as caught:  # torch warns once a process: only kiln's are counted
        warnings.simplefilter("always")
        out = lib.where(mask, x * 2, -x) if form == "function" else (x * 2).where(mask, -x)
    assert lib is not kiln or any("where received a uint8 condition tensor" in str(w.message) for w in caught)
    (out * out).sum().backward()
    return out.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("form", ["function", "method"])
def test_where_takes_a_uint8_condition_as_torch(form):
    torch = require_torch()
    for ours, theirs in zip(_where_and_gradient(kiln, form), _where_and_gradient(torch, form)):
        np.testing.assert_array_equal(ours, theirs)


def test_indexing_by_a_uint8_mask_selects_as_torch():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x, rows = lib.tensor(VALUES), lib.tensor(np.array([0, 1], np.uint8))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            picked, picked_rows = x[lib.tensor(MASK)], x[rows]
            x[lib.tensor(MASK)] = lib.tensor([7.0, 8.0, 9.0], dtype=lib.float64)
        messages = [str(w.message) for w in caught if "indexing with dtype torch.uint8 is now deprecated" in str(w.message)]
        assert lib is not kiln or len(messages) == 3
        results.append((picked.numpy(), picked_rows.numpy(), x.numpy()))
    for ours, theirs in zip(*results):
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


def test_a_compiled_where_with_a_uint8_condition_as_torch():
    torch = require_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = kiln.compile(lambda m, x: kiln.where(m.unsqueeze(1), x, 0.0), fullgraph=True)(kiln.tensor(MASK[0]), kiln.tensor(VALUES.T))
        theirs = torch.where(torch.tensor(MASK[0]).unsqueeze(1), torch.tensor(VALUES.T), 0.0)
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())
