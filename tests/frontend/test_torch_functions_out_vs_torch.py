"""``out=`` of the ``torch.*`` functions that forward to a tensor method (``frontend/torch_functions.py``'s
``_forwarder``), as PyTorch 2.13: NVlabs/edm's training loop writes ``torch.nan_to_num(param.grad, nan=0, posinf=1e5,
neginf=-1e5, out=param.grad)``; kiln passed ``out`` on to the method, a TypeError. The result is written into ``out``
(cast to its dtype, resized) and ``out`` returned; a pair result (``torch.max(x, dim)``) into a pair of outs."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

VALUES = [1.5, float("nan"), float("inf"), -float("inf"), -2.0]


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_nan_to_num_into_itself(name):
    torch, _, _ = libraries(name)
    grad = torch.tensor(VALUES)
    returned = torch.nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5, out=grad)
    assert returned is grad
    assert grad.tolist() == [1.5, 0.0, 1e5, -1e5, -2.0]


def _outs(torch):
    x = torch.tensor([[1.0, 3.0], [4.0, 2.0]], dtype=torch.float64)
    added = torch.zeros(2, 2, dtype=torch.float32)
    torch.add(x, 1, out=added)
    exp = torch.empty(0, dtype=torch.float64)
    torch.exp(x, out=exp)
    values, indices = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.int64)
    pair = torch.max(x, 1, out=(values, indices))
    return [np.asarray(t) for t in (added, exp, values, indices, pair[0], pair[1])] + [str(added.dtype)[-7:]]


def test_outs_as_torch():
    ours, theirs = _outs(libraries("kiln")[0]), _outs(libraries("torch")[0])
    for a, b in zip(ours[:-1], theirs[:-1]):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype and a.shape == b.shape
    assert ours[-1] == theirs[-1] == "float32"


def test_nan_to_num_out_in_a_compiled_step():
    """EDM's loop in one ``kiln.compile(fullgraph=True)`` step: the gradients cleaned in place before the update."""
    weight = kiln.nn.Parameter(kiln.tensor([1.0, 2.0]))
    optimizer = kiln.optim.SGD([weight], lr=1.0)

    def step(x):
        optimizer.zero_grad()
        (weight * x).sum().backward()
        kiln.nan_to_num(weight.grad, nan=0, posinf=1e5, neginf=-1e5, out=weight.grad)
        optimizer.step()

    kiln.compile(step, fullgraph=True)(kiln.tensor([float("inf"), 0.5]))
    np.testing.assert_allclose(np.asarray(weight.detach()), [1.0 - 1e5, 1.5])
