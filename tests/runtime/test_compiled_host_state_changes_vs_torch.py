"""A ``kiln.compile``'d function that changes a NumPy array or draws from a generator object it reaches (``stats[0] +=
1``, ``rng.normal()``, ``RandomState.rand()``, ``random.Random().random()``) does so at every call, as the same
program run eagerly by torch: kiln's trace did it once and its graph kept the count or draw, silently. The call now
runs eagerly, warned, with the state put back first (``runtime/reachable_host_state.py``); ``fullgraph`` raises."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import libraries, require_torch


def _array_count(lib):
    stats = np.zeros(3)

    def run(x):
        stats[0] += 1
        return x * 2

    return run, lambda: stats.tolist()


def _numpy_generator(lib):
    rng = np.random.default_rng(0)
    return (lambda x: x * float(rng.normal())), lambda: None


def _random_state(lib):
    state = np.random.RandomState(1)
    return (lambda x: x * float(state.rand())), lambda: None


def _python_random(lib):
    generator = random.Random(2)
    return (lambda x: x + generator.random()), lambda: None


def _module_generator(lib):
    class Noisy(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(3)

        def forward(self, x):
            return x * float(self.rng.uniform())

    return Noisy(), lambda: None


PROGRAMS = {program.__name__.strip("_"): program for program in
            (_array_count, _numpy_generator, _random_state, _python_random, _module_generator)}


def _calls(name, program):
    lib, _, _ = libraries(name)
    run, left = program(lib)
    if lib is kiln:
        run = kiln.compile(run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [run(lib.ones(2, dtype=lib.float64)).tolist() for _ in range(3)]
    return (outputs, left()), [str(w.message) for w in caught]


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_host_state_changed_at_every_call_as_torch(program):
    require_torch()
    ours, warned = _calls("kiln", PROGRAMS[program])
    assert ours == _calls("torch", PROGRAMS[program])[0]
    assert any("while traced" in message for message in warned)


def test_fullgraph_raises_with_the_generator_put_back():
    rng = np.random.default_rng(5)
    expected = np.random.default_rng(5).normal()
    with pytest.raises(KilnError, match=r"changes the closure variable 'rng' \(a NumPy random generator\)"):
        kiln.compile(lambda x: x * float(rng.normal()), fullgraph=True)(kiln.ones(2))
    assert rng.normal() == expected


def test_an_array_only_read_compiles():
    table = np.arange(3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled = kiln.compile(lambda x: x * float(table[2]), fullgraph=True)
        assert compiled(kiln.ones(2)).tolist() == [2.0, 2.0]
