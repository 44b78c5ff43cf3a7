"""A ``kiln.compile``'d function's changes to the Python values in the lists and dicts it reaches, call by call
against torch's eager run (what ``torch.compile`` replays): a closure list popped (fed parameters), a log appended to,
a module attribute list popped, a dict key deleted, a count read and stored back, a deque popped, a set added to. kiln's trace ran that Python once:
later calls reused the first pop's value and left the list popped once, the log appended once (silently). They are
replayed now (``runtime/container_stores.py``); a list popped is replayed whole and guarded, so the next call traces
with the next item. A list given as an argument and popped is refused (the call runs eagerly, as correct)."""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch


def _popping_closure(lib):
    fed = [0.7, 0.5, 0.9]

    def run(x):
        return x * fed.pop(0)

    return run, lambda: list(fed)


def _appending_a_log(lib):
    log = []

    def run(x):
        log.append(("seen", int(x.shape[0])))
        return x * 2

    return run, lambda: list(log)


def _module_list_popped(lib):
    class Fed(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.fed = [(0.7, False), (0.5, True), (0.9, False)]

        def forward(self, x):
            lam, flip = self.fed.pop(0)
            return (x.flip(0) if flip else x) * lam

    module = Fed()
    return module, lambda: list(module.fed)


def _dict_key_deleted(lib):
    cache = {"scale": 3.0, "stale": 1.0}

    def run(x):
        scale = cache.pop("stale", None) or cache["scale"]
        return x * scale

    return run, lambda: dict(cache)


def _count_read_and_stored(lib):
    stats = {"n": 0}

    def run(x):
        stats["n"] = stats["n"] + 1
        return x * stats["n"]

    return run, lambda: dict(stats)


def _deque_popped(lib):
    queue = collections.deque([0.7, 0.5, 0.9])

    def run(x):
        return x * queue.popleft()

    return run, lambda: list(queue)


def _set_added_to(lib):
    seen = set()

    def run(x):
        seen.add(len(seen))
        return x * 2

    return run, lambda: sorted(seen)


PROGRAMS = {program.__name__.strip("_"): program for program in
            (_popping_closure, _appending_a_log, _module_list_popped, _dict_key_deleted, _count_read_and_stored,
              _deque_popped, _set_added_to)}


def _calls(name, program, fullgraph):
    lib, _, _ = libraries(name)
    run, left = program(lib)
    if lib is kiln:
        run = kiln.compile(run, fullgraph=fullgraph)
    x = lib.tensor(np.array([1.0, 2.0]))
    return [(run(x).tolist(), left()) for _ in range(3)]


@pytest.mark.parametrize("fullgraph", [False, True], ids=["default", "fullgraph"])
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_python_values_changed_by_a_compiled_call_as_torch(program, fullgraph):
    require_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every call compiled: none ran eagerly
        ours = _calls("kiln", PROGRAMS[program], fullgraph)
    assert ours == _calls("torch", PROGRAMS[program], False)


def test_the_next_call_after_a_pop_traces_again():
    run, _ = _popping_closure(kiln)
    compiled = kiln.compile(run)
    for _ in range(3):
        compiled(kiln.ones(2))
    assert compiled.trace_count == 3


def test_a_list_argument_popped_is_refused_and_runs_eagerly_as_correct():
    require_torch()
    results = {}
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        fed = [0.7, 0.5, 0.9]

        def run(x, fed):
            return x * fed.pop(0)

        compiled = kiln.compile(run) if lib is kiln else run
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[name] = [compiled(lib.ones(2), fed).tolist() for _ in range(3)], fed
        if lib is kiln:
            assert any("stores into its argument 'fed'" in str(w.message) for w in caught)
    assert results["kiln"] == results["torch"]
