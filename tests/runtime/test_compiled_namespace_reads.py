"""The globals, closure variables and container items a ``kiln.compile``'d function reads are guarded or followed, as
``torch.compile``'s guards see them (``runtime/namespace_reads.py``): each call gives what the same Python gives
eagerly, call by call. Before, a trace kept what it read once: a global temperature annealed between calls, a
``CFG["scale"]``, a closure's rebound ``scale`` and a global noise tensor drawn anew were all read stale, silently."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError

SCALE = 1.0
CFG = {"scale": 1.0, "name": "run"}
TABLE = [1.0, 2.0]
NOISE = kiln.zeros(3)
CALLS = 0
STEP = 0


def by_global(x):
    return x * SCALE


def by_dict_item(x):
    return x * CFG["scale"]


def by_list_item(x):
    return x * TABLE[-1]


def by_generator(x):
    return sum(x * SCALE for _ in range(2))


def plus_global_noise(x):
    return x + NOISE


def counting(x):
    global CALLS
    CALLS += 1
    return x * CALLS


def _closure():
    scale, noise = 1.0, kiln.zeros(3)

    def scaled(x):
        return x * scale + noise

    def rebind(new_scale, new_noise):
        nonlocal scale, noise
        scale, noise = new_scale, new_noise

    return scaled, rebind


def _set_scale(value):
    global SCALE, NOISE
    SCALE, NOISE = value, kiln.full((3,), value)
    CFG["scale"], TABLE[-1] = value, value


def _traces(compiled):
    """The variants traced (not the markers of a signature that traces with static shapes)."""
    kept = [*compiled.variants.values(), *(v for earlier in compiled.superseded.values() for v in earlier)]
    return sum(hasattr(v, "executable") for v in kept)


@pytest.mark.parametrize("fn", [by_global, by_dict_item, by_list_item, by_generator, plus_global_noise])
def test_a_global_changed_between_calls_reaches_each_call_as_eagerly(fn):
    compiled = kiln.compile(fn, fullgraph=True)
    try:
        for value in (1.0, 2.0, 0.5, 2.0):
            _set_scale(value)
            x = kiln.tensor(np.arange(3.0))
            np.testing.assert_allclose(np.asarray(compiled(x)), np.asarray(fn(x)))
    finally:
        _set_scale(1.0)
    assert _traces(compiled) == (1 if fn is plus_global_noise else 3)  # a tensor is fed; a number traces per value


def test_a_closure_variable_rebound_between_calls_reaches_each_call_as_eagerly():
    scaled, rebind = _closure()
    compiled = kiln.compile(scaled, fullgraph=True)
    for value in (1.0, 3.0, 1.0):
        rebind(value, kiln.full((3,), -value))
        x = kiln.tensor(np.arange(3.0))
        np.testing.assert_allclose(np.asarray(compiled(x)), np.asarray(scaled(x)))
    assert _traces(compiled) == 2


class Tempered(kiln.nn.Module):
    """A module whose forward reads a script's global."""

    def __init__(self):
        super().__init__()
        self.linear = kiln.nn.Linear(3, 2).double()

    def forward(self, x):
        return self.linear(x) / SCALE


def test_a_global_read_by_a_module_forward_is_guarded_in_inference_a_compiled_forward_and_a_whole_step():
    kiln.manual_seed(0)
    model, twin = Tempered(), Tempered()
    twin.load_state_dict(model.state_dict())
    optimizers = kiln.optim.SGD(model.parameters(), lr=0.1), kiln.optim.SGD(twin.parameters(), lr=0.1)

    def step(net, optimizer, x):
        optimizer.zero_grad()
        loss = (net(x) ** 2).sum()
        loss.backward()
        optimizer.step()
        return loss

    whole = kiln.compile(lambda x: step(model, optimizers[0], x), fullgraph=True)
    forward = kiln.compile(model, fullgraph=True)
    try:
        for call, value in enumerate((1.0, 2.0, 4.0, 2.0)):
            _set_scale(value)
            x = kiln.tensor(np.random.default_rng(call).standard_normal((4, 3)))
            with kiln.no_grad():
                np.testing.assert_allclose(np.asarray(forward(x)), np.asarray(twin(x)), rtol=1e-12)
            np.testing.assert_allclose(float(whole(x)), float(step(twin, optimizers[1], x)), rtol=1e-12)
            loss, expected = (forward(x) ** 2).sum(), (twin(x) ** 2).sum()  # the compiled forward for backward()
            loss.backward()
            expected.backward()
            np.testing.assert_allclose(float(loss), float(expected), rtol=1e-12)
            np.testing.assert_allclose(np.asarray(model.linear.weight.grad), np.asarray(twin.linear.weight.grad),
                                       rtol=1e-12)
    finally:
        _set_scale(1.0)
    for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        np.testing.assert_allclose(np.asarray(mine.data), np.asarray(theirs.data), rtol=1e-12)


def test_a_global_counter_the_function_sets_is_set_by_every_call_as_a_number_that_changes():
    """``global CALLS; CALLS += 1``: the trace runs the Python once; each call sets the global as eagerly. Once it
    changes it is a number that changes (``runtime/dynamic_attributes.py``, as an int attribute), so 12 calls trace
    twice."""
    global CALLS
    CALLS = 0
    compiled = kiln.compile(counting, fullgraph=True)
    assert [float(compiled(kiln.ones(1))) for _ in range(12)] == [float(k) for k in range(1, 13)]
    assert CALLS == 12 and type(CALLS) is int
    assert _traces(compiled) == 2


def scaled_by_the_step(x):
    return x * STEP + x * (STEP % 3)


def test_a_global_step_counted_outside_is_a_number_that_changes():
    """A script's ``STEP += 1`` between calls, read by the function in int arithmetic: after its first change it is a
    graph input (traced twice in 12 calls), not a variant per value."""
    global STEP
    compiled = kiln.compile(scaled_by_the_step, fullgraph=True)
    try:
        for STEP in range(12):
            np.testing.assert_allclose(np.asarray(compiled(kiln.ones(2))), np.asarray(scaled_by_the_step(kiln.ones(2))))
        assert _traces(compiled) == 2 and type(STEP) is int
    finally:
        STEP = 0


def needs_the_int(x):
    global CALLS
    CALLS += 1
    return x * len(str(CALLS))


def test_a_global_counter_whose_digits_the_python_needs_runs_eagerly_past_the_limit_naming_it():
    """``str(CALLS)`` needs the value: each call traces a variant for it until ``recompile_limit``, then the calls run
    eagerly (warned, naming the global), giving what the Python gives."""
    global CALLS
    CALLS = 0
    compiled = kiln.compile(needs_the_int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [float(compiled(kiln.ones(1))) for _ in range(12)]
    assert results == [float(len(str(k))) for k in range(1, 13)] and CALLS == 12
    assert any("CALLS" in str(w.message) for w in caught)
    CALLS = 0
    with pytest.raises(KilnError, match="CALLS"):
        strict = kiln.compile(needs_the_int, fullgraph=True)
        for _ in range(12):
            strict(kiln.ones(1))


def stores_a_traced_tensor(x):
    global NOISE
    NOISE = x * 2
    return x + 1


def test_a_global_set_to_a_traced_tensor_runs_eagerly_and_the_global_is_set_as_eagerly():
    global NOISE
    compiled = kiln.compile(stores_a_traced_tensor)
    try:
        with pytest.warns(UserWarning, match="sets the global NOISE to a value a trace cannot give"):
            compiled(kiln.ones(3))
        np.testing.assert_allclose(np.asarray(NOISE), 2.0)
        with pytest.raises(KilnError, match="the global NOISE"):
            kiln.compile(stores_a_traced_tensor, fullgraph=True)(kiln.ones(3))
        np.testing.assert_allclose(np.asarray(NOISE), 2.0)  # the failed trace's write was put back
    finally:
        NOISE = kiln.zeros(3)
