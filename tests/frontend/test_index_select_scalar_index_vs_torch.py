"""``index_select`` with a 0-d index (Transformer-XL's ``AdaptiveEmbedding``: ``mask_i.nonzero().squeeze()`` is 0-d
when one token falls in a cluster) picks that one row and keeps the dim (size 1), as torch's; kiln refused it
("index_select takes a 1-D index"). Values and gradients vs torch 2.13, eager and compiled; a 2-D index still raises."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_index_select_with_a_0d_index_as_torch(dim):
    torch = require_torch()
    x = np.arange(12.0).reshape(3, 4) / 7
    results = []
    for lib in (kiln, torch):
        source = lib.tensor(x, requires_grad=True)
        picked = source.index_select(dim, lib.tensor(2))
        (picked * (1 + lib.arange(picked.numel()).reshape(picked.shape))).sum().backward()
        results.append((np.array(picked.detach().numpy()), np.array(source.grad.numpy())))
    (ours, our_grad), (theirs, their_grad) = results
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(our_grad, their_grad)


def test_compiled_index_select_with_a_0d_index_as_torch():
    torch = require_torch()
    x = np.arange(12.0).reshape(4, 3)

    def pick(lib):
        return lambda table, i: table.index_select(0, i) * 2

    theirs = pick(torch)(torch.tensor(x), torch.tensor(1)).numpy()
    ours = kiln.compile(pick(kiln), fullgraph=True)(kiln.tensor(x), kiln.tensor(1))
    np.testing.assert_array_equal(np.array(ours.numpy()), theirs)


def test_index_select_with_a_2d_index_still_raises():
    with pytest.raises(Exception, match="index_select takes a 1-D index"):
        kiln.ones(3, 4).index_select(0, kiln.tensor([[1]]))
