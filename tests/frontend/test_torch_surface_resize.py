"""``Tensor.resize_`` and ``resize_as_`` against torch 2.13: the new shape in place, the row-major elements kept when it
shrinks and the prefix kept when it grows (torch leaves the rest uninitialised; the tests write it before reading, as
eval_knn.py's ``retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()`` does), eagerly and in a
``kiln.compile``d function; refused as torch for a tensor that requires grad, and by kiln (saying what to write) for a
view and for a closure tensor resized inside a compiled function. kiln had no ``resize_``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def resizes(lib, x):
    """Shrink by ints, grow by a tuple then fill the grown part, resize_as_ another tensor; each returned with its
    shape."""
    shrunk = x.clone().resize_(2, 2)
    grown = x.clone().resize_((4, 3))
    grown[2:] = 7.0
    knn = lib.zeros(2, 3).resize_(4, 3).zero_()
    knn.scatter_(1, lib.tensor([[0], [2], [1], [2]]), 1)
    as_other = x.clone().resize_as_(lib.zeros(3, 2))
    return shrunk, grown, knn, as_other


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_resize_as_torch(compiled):
    torch = require_torch()
    x = np.arange(6.0).reshape(2, 3)
    fn = kiln.compile(lambda t: resizes(kiln, t), fullgraph=True) if compiled else (lambda t: resizes(kiln, t))
    ours = fn(kiln.tensor(x))
    theirs = resizes(torch, torch.tensor(x))
    for mine, reference in zip(ours, theirs, strict=True):
        assert tuple(mine.shape) == tuple(reference.shape)
        np.testing.assert_array_equal(np.asarray(mine.numpy()), reference.numpy())


def test_resize_of_a_tensor_that_requires_grad_is_refused_as_torch():
    torch = require_torch()
    for lib, error in ((kiln, kiln.TraceError), (torch, RuntimeError)):
        with pytest.raises(error, match="cannot resize variables that require grad"):
            lib.zeros(2, requires_grad=True).resize_(4)


def test_resize_of_a_view_or_a_closure_tensor_in_a_trace_says_what_to_do():
    base = kiln.zeros(2, 3)
    view = base[0]
    with pytest.raises(kiln.TraceError, match=r"(?s)test_torch_surface_resize.py:\d+.*sharing storage with views.*new_zeros"):
        view.resize_(4)
    closure = kiln.zeros(3)
    with pytest.raises(kiln.TraceError, match=r"(?s)test_torch_surface_resize.py:\d+.*tensor from outside it"):
        kiln.compile(lambda x: closure.resize_(2, 2) + x, fullgraph=True)(kiln.zeros(2, 2))
