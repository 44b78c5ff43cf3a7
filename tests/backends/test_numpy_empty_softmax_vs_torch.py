"""Softmax and log-softmax of a tensor with no elements (an attention over zero keys: Transformer-XL-style memories of
length 0, a batch of no rows) give the empty result, as torch's; the NumPy kernels raised "zero-size array to
reduction operation maximum which has no identity" when the softmax axis was empty. Eager, compiled, gradient."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

SHAPES_AXES = [((3, 0), 1), ((3, 0), 0), ((0, 4), 1), ((2, 0, 3), 1), ((2, 0, 3), -1)]


@pytest.mark.parametrize("shape, dim", SHAPES_AXES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_of_an_empty_tensor_as_torch(name, shape, dim):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x = lib.ones(shape, requires_grad=True)
        y = getattr(lib, name)(x, dim=dim)
        y.sum().backward()
        compiled = kiln.compile(lambda t: getattr(kiln, name)(t, dim=dim), fullgraph=True) if lib is kiln else None
        again = compiled(lib.ones(shape)) if compiled else y
        results.append((tuple(y.shape), str(y.dtype).split(".")[-1], tuple(x.grad.shape), tuple(again.shape)))
    assert results[0] == results[1]
