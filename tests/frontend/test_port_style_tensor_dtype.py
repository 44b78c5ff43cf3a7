"""``kiln.tensor(t)`` of a tensor or a NumPy scalar keeps its dtype, as ``torch.tensor``'s (the style-transfer
tutorial's ``Normalization`` builds ``torch.tensor(mean)`` from a float64 tensor); Python numbers take the default."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


@pytest.mark.parametrize("make", [
    lambda lib: lib.tensor([0.485, 0.456], dtype=lib.float64),
    lambda lib: lib.tensor([1, 2], dtype=lib.int32),
    lambda lib: np.float64(0.25),
    lambda lib: np.int32(3),
    lambda lib: [0.5, 1.5],
    lambda lib: 7,
], ids=["float64-tensor", "int32-tensor", "numpy-float64", "numpy-int32", "list", "int"])
def test_tensor_of_tensor_or_scalar_keeps_torchs_dtype(make):
    torch = require_torch()
    ours, theirs = kiln.tensor(make(kiln)), torch.tensor(make(torch))
    assert ours.dtype.numpy == theirs.numpy().dtype
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
