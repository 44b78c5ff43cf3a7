"""The plain attributes of the modules a compiled function calls (a Gumbel-softmax ``self.temperature`` annealed
between steps, ProGAN's fade-in ``self.alpha``, a sampler's ``model.top_k``) are guarded on their values, as
``torch.compile`` guards the module attributes it reads: a call finding another value traces a variant for it. Before,
the first trace's value was baked in, silently, in the inference calls, whole compiled steps and compiled forwards for
``backward()`` alike. An int that changes at every call is a number that changes (``runtime/dynamic_attributes.py``).
Only the attributes the trace reads are guarded (``frontend/module_attribute_reads.py``), on any module, called or
not."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _annealed(lib):
    class Annealed(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = lib.nn.Linear(3, 3).double()
            self.temperature, self.steps_seen = 1.0, 0

        def forward(self, x):
            return lib.softmax(self.linear(x) / self.temperature, dim=-1)

    return Annealed()


def _twins():
    torch = require_torch()
    kiln.manual_seed(0)
    ours, theirs = _annealed(kiln), _annealed(torch)
    theirs.load_state_dict({name: torch.tensor(np.asarray(value)) for name, value in ours.state_dict().items()})
    return torch, ours, theirs


TEMPERATURES = (1.0, 0.5, 0.25, 0.5)


def test_an_annealed_temperature_reaches_compiled_inference_as_torch():
    torch, ours, theirs = _twins()
    compiled, x = kiln.compile(ours), np.random.default_rng(0).standard_normal((2, 3))
    for temperature in TEMPERATURES:
        ours.temperature = theirs.temperature = temperature
        with kiln.no_grad(), torch.no_grad():
            np.testing.assert_allclose(np.asarray(compiled(kiln.tensor(x))), theirs(torch.tensor(x)).numpy(), rtol=1e-12)


def test_an_annealed_temperature_reaches_a_compiled_step_and_a_compiled_forward_as_torch():
    torch, ours, theirs = _twins()
    compiled = kiln.compile(ours)
    optimizer, twin_optimizer = kiln.optim.SGD(ours.parameters(), lr=0.5), torch.optim.SGD(theirs.parameters(), lr=0.5)

    def step(lib, model, optimizer, x):
        optimizer.zero_grad()
        loss = (model(x)[:, 0] ** 2).sum()
        loss.backward()
        optimizer.step()
        return loss

    whole = kiln.compile(lambda x: step(kiln, ours, optimizer, x), fullgraph=True)
    for call, temperature in enumerate(TEMPERATURES * 2):
        ours.temperature = theirs.temperature = temperature
        x = np.random.default_rng(call).standard_normal((2, 3))
        run = whole if call % 2 else (lambda x: step(kiln, compiled, optimizer, x))  # the step, or the forward
        np.testing.assert_allclose(float(run(kiln.tensor(x))), float(step(torch, theirs, twin_optimizer, torch.tensor(x))),
                                   rtol=1e-12)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-12)


def test_values_kept_on_the_module_and_changed_outside_but_never_read_trace_once():
    """A trainer's ``model.steps_seen += 1`` and ``model.last_loss = loss.item()`` between calls change at every call,
    and the forward never reads them: as ``torch.compile`` guards only what the code reads, the calls trace once. (The
    count traced twice, as a number that changes from the second call, and the float at every call until
    ``recompile_limit``, when every public attribute of a called module was guarded.)"""
    _, ours, _ = _twins()
    compiled = kiln.compile(ours, fullgraph=True)
    with kiln.no_grad():
        for step in range(12):
            loss = compiled(kiln.ones(2, 3, dtype=kiln.float64)).sum()
            ours.steps_seen += 1
            ours.last_loss = loss.item() + step
    assert sum(v is not None for v in compiled.variants.values()) + sum(map(len, compiled.superseded.values())) == 1
    assert ours.steps_seen == 12 and type(ours.steps_seen) is int


def test_a_numpy_scalar_temperature_reaches_compiled_calls_as_torch():
    """The Gumbel-softmax VAE anneals with NumPy (``model.temp = np.maximum(temp * np.exp(-rate * i), temp_min)``):
    the attribute holds a ``np.float64`` (or a ``np.float32``, a ``np.int64``), guarded as a Python number is; it was
    baked in silently (a whole compiled step went on with the first trace's temperature)."""
    torch, ours, theirs = _twins()
    compiled = kiln.compile(ours)
    first_column = kiln.compile(lambda x: ours(x)[:, 0].sum(), fullgraph=True)
    for temperature in (np.float64(1.0), np.maximum(np.exp(-0.3), 0.5), np.float32(0.25), np.int64(2), np.float64(1.0)):
        ours.temperature = theirs.temperature = temperature
        x = np.random.default_rng(0).standard_normal((2, 3))
        with kiln.no_grad(), torch.no_grad():
            expected = theirs(torch.tensor(x)).numpy()
            np.testing.assert_allclose(np.asarray(compiled(kiln.tensor(x))), expected, rtol=1e-12)
            np.testing.assert_allclose(float(first_column(kiln.tensor(x))), expected[:, 0].sum(), rtol=1e-12)


def test_a_temperature_changed_at_every_call_is_named_past_the_recompile_limit():
    """A float annealed at every call traces a variant per value; past ``recompile_limit`` the fullgraph error names
    the attribute read (it said ``it sets  at every call``, naming nothing), and its advice works: the value in a
    buffer filled in place is one graph for every call."""
    _, ours, _ = _twins()
    compiled, x = kiln.compile(ours, fullgraph=True), kiln.ones(2, 3, dtype=kiln.float64)
    with kiln.no_grad(), pytest.raises(kiln.KilnError, match=r"it reads Annealed\.temperature, which changes at every"):
        for call in range(20):
            ours.temperature = np.float64(1.0 / (call + 1))
            compiled(x)
    del ours.temperature
    ours.register_buffer("temperature", kiln.tensor(1.0, dtype=kiln.float64))
    compiled = kiln.compile(ours, fullgraph=True)
    with kiln.no_grad():
        for call in range(20):
            ours.temperature.fill_(1.0 / (call + 1))
            expected = kiln.softmax(ours.linear(x) / (1.0 / (call + 1)), dim=-1)
            np.testing.assert_allclose(np.asarray(compiled(x)), np.asarray(expected), rtol=1e-12)
    assert sum(v is not None for v in compiled.variants.values()) + sum(map(len, compiled.superseded.values())) == 1


def _gated(lib):
    class Gate(lib.nn.Module):  # never called: its owner reads its scale
        def __init__(self):
            super().__init__()
            self.scale = 2.0

    class Gated(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.gate = lib.nn.Linear(3, 2).double(), Gate()

        def forward(self, x):
            return self.linear(x) * self.gate.scale

    return Gated()


def test_an_attribute_read_from_a_module_that_is_not_called_is_guarded_as_torch():
    """``self.gate.scale`` read by the owner's forward, the gate never called: its value was baked in (only the
    modules called were guarded), silently; it is a read like any other now."""
    torch = require_torch()
    ours, theirs = _gated(kiln), _gated(torch)
    theirs.load_state_dict({name: torch.tensor(np.asarray(value)) for name, value in ours.state_dict().items()})
    compiled, x = kiln.compile(ours, fullgraph=True), np.random.default_rng(1).standard_normal((4, 3))
    for scale in (2.0, 0.5, 3.0):
        ours.gate.scale = theirs.gate.scale = scale
        with kiln.no_grad(), torch.no_grad():
            np.testing.assert_allclose(np.asarray(compiled(kiln.tensor(x))), theirs(torch.tensor(x)).numpy(), rtol=1e-12)
