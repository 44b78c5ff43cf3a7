"""``torch.full_like`` / ``zeros_like`` / ``ones_like`` of an eager tensor give a tensor of its own memory, written in
place as torch's: YOLOv5's ``t = torch.full_like(pcls, self.cn); t[range(n), tcls[i]] = self.cp``. Built as a
broadcast of one number, the result counted as an expanded tensor (strides 0), whose index assignment torch refuses."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

MAKERS = {"full_like": lambda lib, x: lib.full_like(x, 0.25), "zeros_like": lambda lib, x: lib.zeros_like(x),
          "ones_like": lambda lib, x: lib.ones_like(x, dtype=lib.float32),
          "full_like int": lambda lib, x: lib.full_like(x, 3, dtype=lib.int64)}


@pytest.mark.parametrize("make", MAKERS)
def test_like_tensors_are_written_in_place_as_torch(make):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x = lib.tensor(np.arange(12.0).reshape(4, 3))
        t = MAKERS[make](lib, x)
        t[range(3), lib.tensor([2, 0, 1])] = 9
        t[3] += 1
        t.add_(1)
        results.append(np.array(t.numpy()))
        assert np.array(x.numpy()).sum() == 66.0  # the input untouched
    assert results[0].dtype == results[1].dtype
    np.testing.assert_array_equal(*results)


def test_full_like_in_a_compiled_function_as_torch():
    """Traced, ``full_like`` is still a broadcast constant (``new_full``): writing it must not be refused either."""
    torch = require_torch()

    def fn(x):
        t = torch_like.full_like(x, 0.5)
        t[:, 0] = x[:, 1]
        return t * x

    x = np.arange(6.0).reshape(2, 3)
    torch_like = kiln
    ours = kiln.compile(fn, fullgraph=True)(kiln.tensor(x))
    torch_like = torch
    np.testing.assert_array_equal(np.array(ours.numpy()), fn(torch.tensor(x)).numpy())
