"""``clone()`` inside a compiled function of an eager tensor it reads from its closure (a mask or table built before the
training loop) gives the copy, as torch's: it raised a ``KeyError`` from kiln's array table (the copy was traced, but
looked up as an eager array). A write into the copy leaves the original alone."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries


def program(torch):
    base = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    mask = torch.tensor([True, False, True])

    def f(w):
        copy = base.clone()
        copy[0] = 10.0
        return (w * copy).sum() + base.sum() + (w * mask.clone()).sum()

    return f


def test_clone_of_a_closure_tensor_in_a_compiled_function_as_torch():
    torch, _, _ = libraries("torch")
    w = np.array([0.5, -1.0, 2.0])
    ours = kiln.compile(program(kiln), fullgraph=True)(kiln.tensor(w))
    theirs = program(torch)(torch.tensor(w))
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-15)
