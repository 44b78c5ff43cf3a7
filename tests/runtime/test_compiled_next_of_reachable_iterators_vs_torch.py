"""``next()`` of an iterator a ``kiln.compile``'d function reaches (a DataLoader's, a generator, a list iterator,
``itertools.count()``; a global, a closure's, a module's or a plain object's attribute): each call takes the next
item, as torch's. kiln's trace took one item and its graph reused it at every call (a training step trained on one
batch, silently; a trace refused after its ``next()`` had skipped one). The call now runs eagerly, warned, and
``fullgraph=True`` raises; an iterator the function makes itself (``next(self.parameters())``) still compiles."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import libraries, require_torch


def _loader(lib):
    dataset = lib.utils.data.TensorDataset(lib.tensor(np.arange(6.0).reshape(6, 1)))
    loader_iter = iter(lib.utils.data.DataLoader(dataset, batch_size=2))
    weight = lib.nn.Parameter(lib.ones(1, dtype=lib.float64))

    def step():
        (batch,) = next(loader_iter)
        return (batch * weight).sum()

    return step


def _generator(lib):
    fed = (lib.full((2,), float(v), dtype=lib.float64) for v in (1, 2, 3, 4))
    return lambda: next(fed).sum() * 2


def _counter(lib):
    count = itertools.count(1)
    return lambda: lib.ones(2, dtype=lib.float64).sum() * next(count)


def _module_attribute(lib):
    class Fed(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.scales = iter([0.5, 2.0, 3.0, 4.0])
            self.linear = lib.nn.Linear(1, 1).double()

        def forward(self):
            return self.linear.weight.sum() * 0 + next(self.scales)

    return Fed()


def _plain_object_attribute(lib):
    class Trainer:
        def __init__(self):
            self.batches = iter([lib.full((2,), float(v), dtype=lib.float64) for v in (3, 1, 4, 1)])

        def step(self):
            return next(self.batches).pow(2).sum()

    return Trainer().step


PROGRAMS = {program.__name__.strip("_"): program for program in
            (_loader, _generator, _counter, _module_attribute, _plain_object_attribute)}


def _results(name, program):
    lib, _, _ = libraries(name)
    run = program(lib)
    if lib is kiln:
        run = kiln.compile(run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = [float(run().detach()) for _ in range(3)]
    return values, [str(w.message) for w in caught]


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_each_call_takes_the_next_item_as_torch(program):
    require_torch()
    ours, warned = _results("kiln", PROGRAMS[program])
    assert ours == _results("torch", PROGRAMS[program])[0]
    assert any("takes the next item" in message for message in warned)


def test_fullgraph_refuses_before_taking_an_item():
    fed = iter([1.0, 2.0])
    with pytest.raises(KilnError, match=r"takes the next item of the closure variable 'fed' \(next\(\)\).*step\(x, y\)"):
        kiln.compile(lambda x: x * next(fed), fullgraph=True)(kiln.ones(2))
    assert next(fed) == 1.0


def test_an_iterator_the_function_makes_itself_compiles():
    model = kiln.nn.Linear(2, 2)

    def forward(x):
        return x.to(next(model.parameters()).dtype) @ next(iter([model.weight])).T

    compiled = kiln.compile(forward, fullgraph=True)
    with kiln.no_grad():
        np.testing.assert_allclose(compiled(kiln.ones(1, 2)).numpy(), forward(kiln.ones(1, 2)).numpy())
