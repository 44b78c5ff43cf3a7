"""Tensors a module caches on itself during a ``kiln.compile``d call, as NVIDIA's Tacotron 2 decoder does: each call's
``initialize_decoder_states`` sets ``self.attention_weights_cum = Variable(memory.data.new(B, T).zero_())`` (zeros,
from constants alone) and each decoder step adds to it in place (``self.attention_weights_cum += weights``).

kiln made such a constant an eager tensor the moment it was assigned (``Module.__setattr__``, so code after a trace
can still use it), which the compiled trace then read as a lifted input: a compiled step refused the ``+=`` (a compiled
module), or, compiled as a whole training step, fed each call the sum the last call left (the losses drifted from
torch's from the second step on). A ``kiln.compile`` trace now keeps the traced constant, and each call sets the
attribute to its value, as torch's cached tensor (``frontend/module.py``, ``runtime/attribute_writes.py``).

Also here: the walk that decides whether an assigned tensor is computed from constants alone visits each value once
(``runtime/eager.py``'s ``_constant_array``): a decoder loop caching its states at every step made it exponential.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.runtime import eager
from oracles import libraries

X = np.array([1.0, 2.0, 3.0])


def accumulator(torch, nn, F):
    class Accumulator(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            self.acc = torch.autograd.Variable(x.data.new(3).zero_())
            for _ in range(2):
                self.acc += F.softmax(x * self.w, 0)
            return (self.acc * x).sum() + self.w.sum()

    return Accumulator()


def _run(name, whole_step):
    lib, nn, F = libraries(name)
    model = accumulator(lib, nn, F)
    optimizer = lib.optim.SGD(model.parameters(), lr=0.1)

    def step(x):
        optimizer.zero_grad()
        loss = model(x)
        loss.backward()
        optimizer.step()
        return loss.detach()

    function = step if whole_step else model
    run = kiln.compile(function, fullgraph=True) if lib is kiln else function
    losses = [run(lib.tensor(X)).item() for _ in range(3)]
    return losses, np.array(model.acc.detach().numpy()), np.array(model.w.detach().numpy())


@pytest.mark.parametrize("whole_step", [True, False], ids=["training step", "module"])
def test_a_cached_constant_written_in_place_starts_anew_at_each_call_as_torch(whole_step, float64_default):
    for ours, theirs in zip(_run("kiln", whole_step), _run("torch", whole_step)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_the_constant_walk_visits_each_value_once(monkeypatch):
    """``x`` doubled 60 times (each value read twice): 2**60 paths back to the input, 61 values."""
    calls = [0]
    walk = eager._constant_array

    def counted(value, seen):
        calls[0] += 1
        assert calls[0] < 1000, "the walk revisits values"
        return walk(value, seen)

    monkeypatch.setattr(eager, "_constant_array", counted)

    def doubled(x, constant):
        for _ in range(60):
            x = x + x
            constant = constant + constant
        return x, constant

    graph = kiln.trace(lambda x: doubled(x, kiln.ones(2)), kiln.TensorSpec((2,), "float64"))
    from_input, from_constants = (output.producer.results[output.index] for output in graph.outputs)
    assert eager.constant_leaf(from_input) is None
    leaf = eager.constant_leaf(from_constants)
    assert leaf is not None and calls[0] < 300
