"""A ``kiln.compile``d module whose buffer or parameter array is replaced by one of another shape after a call (a
state buffer registered as ``zeros(0)`` that the forward assigns a ``(B, H)`` tensor, snnTorch-style; net surgery by
``layer.weight.data = new``) is traced again, as torch.compile guards tensor shapes: the trace had baked in the old
shape (the graph's input type, and Python that branched on it). Before, the first trace kept running: the state
buffer's branch ``if self.mem.shape[0] == 0`` was taken at every call, silently (6, 6, 6, 6 where torch gives 6, 9,
10.5, 11.25)."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries


def leaky_state(nn, torch):
    class Leaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mem", torch.zeros(0))

        def forward(self, x):
            mem = torch.zeros_like(x) if self.mem.shape[0] == 0 else self.mem
            self.mem = mem * 0.5 + x
            return self.mem.sum()

    return Leaky()


def test_a_state_buffer_given_its_shape_by_the_first_call_as_torch():
    results = {}
    for name in ("kiln", "torch"):
        torch, nn, _ = libraries(name)
        module = leaky_state(nn, torch)
        run = kiln.compile(module) if name == "kiln" else module
        with torch.no_grad():
            results[name] = [float(run(torch.ones(2, 3))) for _ in range(4)]
    assert results["kiln"] == results["torch"] == [6.0, 9.0, 10.5, 11.25]


def test_a_weight_replaced_by_another_shape_as_torch():
    results = {}
    for name in ("kiln", "torch"):
        torch, nn, _ = libraries(name)
        layer = nn.Linear(3, 2, bias=False).double()
        layer.weight.data = torch.tensor(np.arange(6.0).reshape(2, 3))
        run = kiln.compile(layer) if name == "kiln" else layer
        x = torch.tensor(np.ones((4, 3)))
        with torch.no_grad():
            first = run(x).numpy().copy()
            layer.weight.data = torch.tensor(np.arange(12.0).reshape(4, 3))  # net surgery: 4 outputs now
            results[name] = [first, run(x).numpy().copy()]
    for ours, theirs in zip(results["kiln"], results["torch"]):
        np.testing.assert_array_equal(ours, theirs)
