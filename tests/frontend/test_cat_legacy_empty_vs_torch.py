"""``torch.cat`` skips legacy 1-D empty tensors (shape ``(0,)``) beside tensors of any rank: Transformer-XL's
``init_mems`` gives ``torch.empty(0)`` per layer, then ``torch.cat([mems, w], 0)`` with ``w`` of shape ``(q, b, d)``.
kiln raised "tensor.concat along axis 0 needs operands equal in dtype and every other dim". The empty tensor still
takes part in the dtype promotion and gets an empty gradient, as torch's; eager and compiled."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

CASES = [((0,), (2, 3, 4), 0), ((2, 3), (0,), -1), ((0,), (3, 2), 1), ((0,), (0,), 0), ((4,), (0,), 0)]


@pytest.mark.parametrize("first, second, dim", CASES)
@pytest.mark.parametrize("empty_dtype", ["float64", "int64"])
def test_cat_with_a_legacy_empty_as_torch(first, second, dim, empty_dtype):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        rng = np.random.default_rng(0)
        make = [lib.tensor(rng.standard_normal(shape), dtype=lib.float32) if shape != (0,)
                else lib.empty(0, dtype=getattr(lib, empty_dtype)) for shape in (first, second)]
        floats = [t.requires_grad_() for t in make if t.is_floating_point()]
        out = lib.cat(make, dim)
        if floats:
            (out * lib.arange(out.numel()).reshape(out.shape)).sum().backward()
        results.append((np.array(out.detach().numpy()), str(out.dtype).split(".")[-1],
                        [np.array(t.grad.numpy()) for t in floats]))
    (ours, our_dtype, our_grads), (theirs, their_dtype, their_grads) = results
    assert our_dtype == their_dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    assert [g.shape for g in our_grads] == [g.shape for g in their_grads]
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_array_equal(a, b)


def test_compiled_cat_with_a_legacy_empty_as_torch():
    torch = require_torch()

    def attend(mems, w):
        return torch_or_kiln.cat([mems, w], 0).sum(0)

    x = np.random.default_rng(1).standard_normal((3, 2, 4))
    torch_or_kiln = torch
    theirs = attend(torch.empty(0, dtype=torch.float64), torch.tensor(x)).numpy()
    torch_or_kiln = kiln
    ours = kiln.compile(attend, fullgraph=True)(kiln.empty(0, dtype=kiln.float64), kiln.tensor(x))
    np.testing.assert_allclose(np.array(ours.numpy()), theirs, rtol=1e-15)


def test_cat_of_unequal_ranks_still_raises():
    """Only a shape ``(0,)`` tensor is skipped: a ``(0, 3)`` beside a 3-D tensor is an error in both."""
    torch = require_torch()
    with pytest.raises(RuntimeError, match="same number of dimensions"):
        torch.cat([torch.empty(0, 3), torch.ones(2, 3, 4)])
    with pytest.raises(Exception, match="tensor.concat|rank|dims"):
        kiln.cat([kiln.empty(0, 3), kiln.ones(2, 3, 4)])
