"""``x.detach()`` and a tensor's ``x.data`` share ``x``'s storage in PyTorch, so an in-place write to them writes ``x``
(CleanRL's polyak ``target.data.copy_(tau * p.data + (1 - tau) * target.data)`` on plain tensors, ``h.detach().zero_()``).
kiln left ``x`` unchanged after ``x.detach().zero_()``, silently, and refused to read ``x`` after ``x.data.copy_(v)``.
Now both are views of ``x`` (frontend/view_writes.py): ``x`` takes the values and keeps its own gradient path, as
torch's keeps its ``grad_fn``; eagerly and in a ``kiln.compile``d function. Values and gradients vs torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def write_then_read(lib, case):
    w = lib.tensor([1.0, -2.0, 3.0], dtype=lib.float64, requires_grad=True)
    t = lib.arange(6.0, dtype=lib.float64).reshape(2, 3)
    if case == "detach zero_":
        t.detach().zero_()
    elif case == "data copy_":
        t.data.copy_(lib.ones(2, 3, dtype=lib.float64) * 5)
    elif case == "detach index":
        d = t.detach()
        d[0, 1] = 10.0
        d[1].mul_(-1)
    elif case == "detach then transpose":
        t.detach().t().add_(lib.tensor([[1.0, 2.0]], dtype=lib.float64))
    elif case == "parameter detach":
        t = lib.nn.Parameter(t)
        t.detach().mul_(2)
    y = w * 2
    y.data.fill_(1.5)  # y keeps its gradient to w, as torch's y keeps its grad_fn
    ((y * y).sum() + (y * w).sum() + (t.sum() * w).sum()).backward()
    return np.array(t.detach().numpy()), np.array(y.detach().numpy()), np.array(w.grad.numpy())


@pytest.mark.parametrize("case", ["detach zero_", "data copy_", "detach index", "detach then transpose", "parameter detach"])
def test_a_write_through_detach_or_data_writes_the_tensor_as_torch(case):
    torch = require_torch()
    for ours, theirs in zip(write_then_read(kiln, case), write_then_read(torch, case)):
        np.testing.assert_array_equal(ours, theirs)


def test_polyak_update_of_plain_tensors_in_a_compiled_function_as_torch():
    """CleanRL's soft target update through ``.data`` of closure tensors, called twice (each call reads the values
    the last one wrote)."""
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        source = [lib.tensor(np.linspace(-1, 1, 4)), lib.tensor(np.linspace(2, 3, 3))]
        target = [lib.zeros(4, dtype=lib.float64), lib.ones(3, dtype=lib.float64)]

        def soft_update(tau):
            for param, target_param in zip(source, target):
                target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
            return target[0].sum()

        update = kiln.compile(soft_update, fullgraph=True) if lib is kiln else soft_update
        sums = [float(update(0.25)) for _ in range(2)]
        results.append((sums, [np.array(t.numpy()) for t in target]))
    (our_sums, ours), (their_sums, theirs) = results
    np.testing.assert_allclose(our_sums, their_sums, rtol=1e-12)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12)
