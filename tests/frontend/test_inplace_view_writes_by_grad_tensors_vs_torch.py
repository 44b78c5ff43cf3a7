"""An in-place ``mul_``/``div_``/``pow_`` on a view of a non-leaf by a tensor that requires grad (``h[:, :k] *= gate``):
the write's own op reads the view's old value, which the version check exempts, as PyTorch's saves ``original_self``;
a backward that needs a value a *later* write overwrote still refuses."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require

WRITES = {
    "slice mul_": lambda y, w: y[:2].mul_(w),
    "view mul_": lambda y, w: y.view(2, 2).mul_(w),
    "element mul_": lambda y, w: y[0].mul_(w[0]),
    "slice div_": lambda y, w: y[:2].div_(w),
    "slice pow_": lambda y, w: y[:2].pow_(w),
    "then a whole write": lambda y, w: (y[:2].mul_(w), y.add_(1)),
    "twice through one view": lambda y, w: (y[:2].mul_(w), y[:2].mul_(w)),
    "overlapping views": lambda y, w: (y[1:3].mul_(w), y[:2].mul_(w)),
}


def _gradients(lib, write):
    x = lib.tensor([1.0, 2.0, 3.0, 4.0], dtype=lib.float64, requires_grad=True)
    w = lib.tensor([3.0, 0.5], dtype=lib.float64, requires_grad=True)
    y = x * 1
    write(y, w)
    (y * y).sum().backward()
    return np.concatenate([np.array(x.grad), np.array(w.grad)])


@pytest.mark.parametrize("name", WRITES)
def test_a_write_through_a_view_by_a_tensor_needing_grad_differentiates_as_torchs(name):
    torch = require("torch")
    np.testing.assert_allclose(_gradients(kiln, WRITES[name]), _gradients(torch, WRITES[name]).copy(), rtol=1e-12)


def test_a_later_write_to_a_value_an_earlier_product_saved_still_refuses():
    torch = require("torch")
    for lib, error in ((kiln, RuntimeError), (torch, RuntimeError)):
        x = lib.ones(4, dtype=lib.float64, requires_grad=True)
        w = lib.full((2,), 3.0, dtype=lib.float64, requires_grad=True)
        y = x * 1
        product = y[:2] * w
        y.add_(1)
        with pytest.raises(error, match="modified by an inplace operation"):
            (y.sum() + product.sum()).backward()
