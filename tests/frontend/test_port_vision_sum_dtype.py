"""``sum`` of a bool or integer tensor is int64, as PyTorch's (``pred.eq(target).sum().item()`` counts matches), eager and
traced; ``sum(dtype=)`` casts first. Found porting pytorch/examples' mnist ``test()``: a bool sum stayed bool (True)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

VALUES = np.array([[0.5, -1.0, 2.5], [1.5, 3.0, -0.5]])


@pytest.mark.parametrize("dim", [None, 0, 1])
@pytest.mark.parametrize("make", [lambda t: t > 0, lambda t: (t * 3).int(), lambda t: (t * 3).long()], ids=["bool", "int32", "int64"])
def test_bool_and_integer_sums_count_in_int64_as_torch(make, dim):
    torch = require_torch()
    ours = make(kiln.tensor(VALUES, requires_grad=True) * 1.0)  # an eager tensor, as a model's output is
    theirs = make(torch.tensor(VALUES))
    got, expected = (ours.sum(), theirs.sum()) if dim is None else (ours.sum(dim), theirs.sum(dim))
    assert got.dtype is kiln.DType.i64 and expected.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_traced_bool_sum_and_sum_dtype_match_torch_in_float64():
    torch = require_torch()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    counted = kiln.compile(lambda v: (v > 0).sum(1))(x)
    np.testing.assert_array_equal(counted, torch.tensor(x).gt(0).sum(1).numpy())
    assert counted.dtype == np.int64
    grad = kiln.grad(lambda v: (v.sum(0, dtype=kiln.float64) ** 2).sum())(x)
    leaf = torch.tensor(x, requires_grad=True)
    (leaf.sum(0, dtype=torch.float64) ** 2).sum().backward()
    np.testing.assert_allclose(grad, leaf.grad.numpy(), rtol=1e-6)
