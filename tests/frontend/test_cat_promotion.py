"""``cat``/``concat`` of tensors of different dtypes promote as PyTorch's: float over int over bool, the wider within a
kind, float16 with bfloat16 in float32 (before, the concat op refused operands of unequal dtypes)."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import require_torch

import kiln

PAIRS = [("float32", "float16"), ("int64", "float32"), ("bool", "int32"), ("float16", "bfloat16"), ("int32", "int64"),
         ("float64", "float32"), ("bool", "float16"), ("int64", "bfloat16")]


@pytest.mark.parametrize("first, second", PAIRS)
def test_cat_of_mixed_dtypes_promotes_as_torch(first, second):
    torch = require_torch()
    ours = kiln.cat([kiln.ones((2, 3)).to(getattr(kiln, first)), kiln.zeros((1, 3)).to(getattr(kiln, second))])
    theirs = torch.cat([torch.ones((2, 3), dtype=getattr(torch, first)), torch.zeros((1, 3), dtype=getattr(torch, second))])
    assert str(theirs.dtype) == f"torch.{ours.dtype.numpy.name}"
    np.testing.assert_array_equal(ours.float().numpy(), theirs.float().numpy())


def test_a_traced_cat_promotes_and_differentiates_through_the_cast():
    f = kiln.compile(lambda x, n: kiln.cat([x, n], dim=1), batch_dim=None)
    out = f(np.ones((2, 2), np.float32), np.arange(6).reshape(2, 3))
    assert out.dtype == np.float32 and out.tolist() == [[1, 1, 0, 1, 2], [1, 1, 3, 4, 5]]
    x = kiln.tensor(np.ones((2, 2), np.float32), requires_grad=True)
    (kiln.cat([x, kiln.ones((2, 1)).double()], dim=1) * 3).sum().backward()
    assert x.grad.dtype == np.float32 and (np.asarray(x.grad) == 3).all()
