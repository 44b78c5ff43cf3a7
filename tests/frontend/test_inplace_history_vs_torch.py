"""An eager in-place write of a tensor that needs no gradient keeps no history (``frontend/inplace_history.py``): a
replay buffer written row by row or a running sum held every version it ever had (each write's op read the old value),
so its memory grew with each step. As torch's, the tensor stays a leaf with no ``grad_fn``; a graph that read an old
value keeps it, and a tensor on a gradient path keeps its chain."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from oracles import libraries, require_torch

WRITES = {
    "setitem_row": lambda lib, t, k: t.__setitem__(k % 4, lib.full((3,), float(k))),
    "add_": lambda lib, t, k: t.add_(1.0),
    "copy_": lambda lib, t, k: t.copy_(lib.full((4, 3), float(k))),
    "mul_view": lambda lib, t, k: t[1:].mul_(1.5),
    "clamp_": lambda lib, t, k: t.clamp_(-1.0, float(k)),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_old_values_of_a_tensor_written_in_place_are_freed(name):
    import kiln
    from kiln.frontend.eager_values import eager_array

    buffer = kiln.zeros(4, 3)
    WRITES[name](kiln, buffer, 0)
    first = weakref.ref(eager_array(buffer))
    for k in range(1, 20):
        WRITES[name](kiln, buffer, k)
    gc.collect()
    assert first() is None  # kiln kept every version: each write's op read the one before


@pytest.mark.parametrize("name", sorted(WRITES))
def test_values_and_leaf_state_after_writes_match_torch(name):
    require_torch()
    results = []
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        buffer = lib.zeros(4, 3)
        for k in range(6):
            WRITES[name](lib, buffer, k)
        results.append((np.asarray(buffer).tolist(), buffer.is_leaf, buffer.grad_fn is None, buffer.requires_grad))
    assert results[0] == results[1]


def test_a_graph_that_read_an_old_value_keeps_it_and_a_gradient_path_keeps_its_chain_as_torchs():
    require_torch()
    results = []
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        w = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        x = lib.tensor([1.0, 1.0, 1.0])
        y = x + w          # read x's old values
        x.add_(1.0)        # no gradient path: history dropped
        h = w * 2.0
        h.add_(x)          # on w's gradient path: keeps its chain
        (h.sum() + (y * y).sum()).backward()
        results.append((np.asarray(w.grad).tolist(), h.requires_grad, x.is_leaf, np.asarray(y.detach()).tolist()))
    assert results[0] == results[1]
