"""A class attribute a ``kiln.compile``'d function sets (``Counter.calls += 1``, a submodule's ``type(self).calls += 1``)
is set at every call, as torch's: kiln's trace set it once and its graph kept the value read, silently. The call now
runs eagerly, warned (``runtime/class_attribute_writes.py``); ``fullgraph=True`` raises, the class as it was."""

from __future__ import annotations

import warnings

import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import libraries, require_torch


def _named_class(lib):
    class Counter:
        calls = 0

    def run(x):
        Counter.calls += 1
        return x * Counter.calls

    return run, lambda: Counter.calls


def _submodule_class(lib):
    class Block(lib.nn.Module):
        calls = 0

        def __init__(self):
            super().__init__()
            self.linear = lib.nn.Linear(2, 2)

        def forward(self, x):
            type(self).calls += 1
            return self.linear(x) * 0 + x * Block.calls

    return lib.nn.Sequential(Block()), lambda: Block.calls


@pytest.mark.parametrize("program", [_named_class, _submodule_class], ids=["named", "submodule"])
def test_a_class_attribute_set_at_every_call_as_torch(program):
    require_torch()
    results = {}
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        run, calls = program(lib)
        run = kiln.compile(run) if lib is kiln else run
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outputs = [run(lib.ones(1, 2)).detach().tolist() for _ in range(3)]
        results[name] = outputs, calls()
        if lib is kiln:
            assert any("sets the class attribute" in str(w.message) for w in caught)
    assert results["kiln"] == results["torch"]


def test_fullgraph_raises_and_leaves_the_class_as_it_was():
    run, calls = _named_class(kiln)
    with pytest.raises(KilnError, match=r"sets the class attribute Counter.calls"):
        kiln.compile(run, fullgraph=True)(kiln.ones(2))
    assert calls() == 0


def test_a_class_attribute_only_read_compiles():
    class Scaled(kiln.nn.Module):
        scale = 3.0

        def forward(self, x):
            return x * type(self).scale

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kiln.compile(Scaled(), fullgraph=True)(kiln.ones(2)).tolist() == [3.0, 3.0]
