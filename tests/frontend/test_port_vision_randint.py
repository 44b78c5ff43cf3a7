"""``randint``'s call forms as PyTorch's: ``randint(high, size=(1,))`` (the Forward-Forward example's
``torch.randint(len(allowed_indices), size=(1,))``) failed, taking ``size`` for ``high``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

FORMS = [
    (lambda lib: lib.randint(9, size=(1,)), 0, 9),
    (lambda lib: lib.randint(9, (400,)), 0, 9),
    (lambda lib: lib.randint(3, 5, (2, 200)), 3, 5),
    (lambda lib: lib.randint(-2, 3, size=(400,)), -2, 3),
]


@pytest.mark.parametrize(("form", "low", "high"), FORMS, ids=["high-size=", "high-size", "low-high-size", "negative-low-size="])
def test_randint_forms_give_torch_shapes_dtypes_and_ranges(form, low, high):
    torch = require_torch()
    kiln.manual_seed(0)
    ours, theirs = np.asarray(form(kiln)), form(torch).numpy()
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.int64
    assert theirs.min() >= low and theirs.max() < high and ours.min() >= low and ours.max() < high
    if ours.size >= 400:
        assert set(np.unique(ours)) == set(range(low, high))  # every value drawn


def test_traced_randint_with_size_keyword():
    draw = kiln.compile(lambda x: x + kiln.randint(4, size=(3,)), seed=0, batch_dim=None)
    values = draw(np.zeros(3, np.int64))
    assert values.dtype == np.int64 and values.shape == (3,) and ((0 <= values) & (values < 4)).all()
