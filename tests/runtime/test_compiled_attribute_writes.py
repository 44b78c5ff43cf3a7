"""A module attribute the compiled code sets (a Neural ODE's ``self.nfe += 1``, a rotary cache's
``self.seq_len_cached = n``) is set once per call, as eagerly: the trace runs the Python once, so each variant is
guarded on the value it read and sets the value it left (``runtime/attribute_writes.py``). It counted traces, not
calls, before (found by H1's Neural ODE probe)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import torch_twins


def _counting_field(lib):
    class Field(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = lib.nn.Linear(3, 3)
            self.nfe = 0

        def forward(self, y):
            self.nfe += 1
            return lib.tanh(self.linear(y))

    return Field().double()


def _ode_step(lib, field, optimizer):
    def step(y0):
        optimizer.zero_grad()
        y = y0 + 0.1 * field(y0)
        y = y + 0.1 * field(y)  # two evaluations of the field per call
        loss = (y ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss

    return step


def _batch(seed=0):
    return np.random.default_rng(seed).standard_normal((4, 3))


def test_a_counter_counts_calls_and_stays_compiled_as_a_number_that_changes_with_torchs_numbers():
    """The counter's guard fails at the second call: from the next trace on it is a graph input fed the attribute
    (``runtime/dynamic_attributes.py``), as ``torch.compile``'s automatic dynamic ints. Before, each call traced again
    until ``recompile_limit`` and then ran eagerly."""
    torch, field, twin = torch_twins(_counting_field, seed=1)
    step = kiln.compile(_ode_step(kiln, field, kiln.optim.SGD(field.parameters(), lr=0.1)))
    twin_step = _ode_step(torch, twin, torch.optim.SGD(twin.parameters(), lr=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # never eagerly
        for call in range(12):
            ours, theirs = step(kiln.tensor(_batch(call))), twin_step(torch.tensor(_batch(call)))
            np.testing.assert_allclose(float(ours), float(theirs.detach()), rtol=1e-12)
            assert field.nfe == twin.nfe == 2 * (call + 1) and type(field.nfe) is int
    assert _traces(step) == 2  # the first value, then any
    for p, q in zip(field.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)


def _traces(compiled):
    return sum(v is not None for v in compiled.variants.values()) + sum(map(len, compiled.superseded.values()))


def _field_scaled_by_its_count(lib):
    field = _counting_field(lib)
    forward = field.forward
    field.forward = lambda y: forward(y) * (1 + field.nfe / 1000)  # a float of the count: its value, every call
    return field


def test_with_fullgraph_a_counter_whose_value_the_python_needs_raises_at_the_recompile_limit_naming_it():
    _, field, _ = torch_twins(_field_scaled_by_its_count, seed=1)
    step = kiln.compile(_ode_step(kiln, field, kiln.optim.SGD(field.parameters(), lr=0.1)), fullgraph=True)
    for call in range(8):
        step(kiln.tensor(_batch(call)))
    with pytest.raises(KilnError, match=r"needs the value of Field\.nfe.*register_buffer"):
        step(kiln.tensor(_batch(8)))
    assert field.nfe == 16  # the refused call changed nothing


def _cached_rotation(lib):
    class Rotation(lib.nn.Module):
        """A rotary-style cache: filled (a plain int and a tensor) on the first call that needs it."""

        def __init__(self):
            super().__init__()
            self.scale = lib.nn.Linear(4, 4)
            self.seq_len_cached = None

        def forward(self, x):
            if self.seq_len_cached is None or x.shape[1] > self.seq_len_cached:
                self.seq_len_cached = x.shape[1]
            return self.scale(x) * (self.seq_len_cached / 8)

    return Rotation().double()


def test_a_value_set_once_costs_one_more_trace_and_then_stays_compiled():
    torch, model, twin = torch_twins(_cached_rotation, seed=2)
    compiled = kiln.compile(lambda x: model(x), batch_dim=None)
    x = np.random.default_rng(3).standard_normal((2, 5, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # never eagerly
        results = [np.asarray(compiled(kiln.tensor(x))) for _ in range(4)]
    expected = twin(torch.tensor(x)).detach().numpy()
    for result in results:
        np.testing.assert_allclose(result, expected, rtol=1e-12)
    assert model.seq_len_cached == twin.seq_len_cached == 5
    assert _traces(compiled) == 2


def _ode_loss(lib, field, y0):
    y = y0 + 0.1 * field(y0)
    return ((y + 0.1 * field(y)) ** 2).mean()


def test_a_compiled_models_forward_that_sets_a_counter_trains_compiled_and_counts_each_call_as_torch():
    """The forward split for ``loss.backward()`` reads the counter as a number that changes
    (``runtime/dynamic_attributes.py``): it ran eagerly, warned, before (``fullgraph`` raised)."""
    torch, field, twin = torch_twins(_counting_field, seed=1)
    compiled = kiln.compile(field, fullgraph=True)
    optimizer, twin_optimizer = kiln.optim.SGD(field.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # never eagerly
        for call in range(4):
            optimizer.zero_grad()
            twin_optimizer.zero_grad()
            loss, twin_loss = _ode_loss(kiln, compiled, kiln.tensor(_batch(call))), _ode_loss(torch, twin, torch.tensor(_batch(call)))
            loss.backward()
            twin_loss.backward()
            optimizer.step()
            twin_optimizer.step()
            np.testing.assert_allclose(float(loss.detach()), float(twin_loss.detach()), rtol=1e-12)
            assert field.nfe == twin.nfe == 2 * (call + 1) and type(field.nfe) is int
    for p, q in zip(field.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)


def _labelling_field(lib):
    field = _counting_field(lib)
    forward = field.forward

    def labelled(y):
        field.label = f"call {field.nfe}"  # a string set per call: the compiled forward cannot stand for it
        return forward(y)

    field.forward = labelled
    return field


def test_a_compiled_models_forward_that_sets_a_string_trains_eagerly_warned():
    _, field, _ = torch_twins(_labelling_field, seed=1)
    compiled = kiln.compile(field)
    with pytest.warns(UserWarning, match=r"sets Field\.label"):
        for call in range(3):
            compiled(kiln.tensor(_batch(call))).sum().backward()
    assert field.nfe == 3 and field.label == "call 2"
    with pytest.raises(KilnError, match=r"sets Field\.label"):
        kiln.compile(_labelling_field(kiln), fullgraph=True)(kiln.tensor(_batch()))


def test_modules_made_inside_the_compiled_function_are_not_guarded():
    model = kiln.nn.Linear(3, 2).double()

    def head(x):
        return kiln.nn.Identity()(model(x))  # a module constructed at each call: its __init__ sets attributes

    compiled = kiln.compile(head)
    for call in range(3):
        compiled(kiln.tensor(_batch(call)))
    assert sum(v is not None for v in compiled.variants.values()) == 1 and not compiled.superseded


def test_a_trace_that_fails_after_a_write_undoes_it_before_the_call_runs_eagerly():
    _, field, _ = torch_twins(_counting_field, seed=1)

    def branching(y):
        out = field(y)  # nfe += 1, then a branch on a value the trace does not have
        return out * 2 if float(out.sum()) > 0 else out

    compiled = kiln.compile(branching)
    with pytest.warns(UserWarning, match="runs eagerly"):
        for call in range(3):
            compiled(kiln.tensor(_batch(call)))
    assert field.nfe == 3


def test_a_list_of_constant_tensors_set_in_forward_holds_their_values_after_each_call():
    """``self.masks = [torch.tril(torch.ones(n, n)) for n in sizes]`` re-made at every forward: the list holds eager
    tensors of their values after a compiled call (it held the trace's tensors, which fail outside it), and a list of
    equal values satisfies the variant's guard, so the calls trace twice (the first value, then the list), not at
    every call."""
    class Masked(kiln.nn.Module):
        def __init__(self):
            super().__init__()
            self.masks = None

        def forward(self, x):
            self.masks = [kiln.tril(kiln.ones(n, n)) for n in (2, 3)]
            return x @ self.masks[1]

    model = Masked()
    compiled = kiln.compile(model, fullgraph=True)
    for _ in range(4):
        assert compiled(kiln.ones(1, 3)).tolist() == [[3.0, 2.0, 1.0]]
        assert (model.masks[0] * 1).tolist() == [[1.0, 0.0], [1.0, 1.0]]  # eager, usable after the call
    assert _traces(compiled) == 2
