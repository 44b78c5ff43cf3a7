"""An int attribute a compiled function changes at every call (a counter) is traced as a number that changes from
its second trace on (``runtime/dynamic_attributes.py``, ``frontend/dynamic_ints.py``), as ``torch.compile``'s automatic
dynamic ints: the Python computes with it as with the int, checked here call by call against the same code run
eagerly, while the traces stay few."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError


class Stepper:
    """An object whose method counts its calls and uses the count every way the Python can."""

    def __init__(self, uses):
        self.n, self.uses, self.table = 0, uses, kiln.arange(6.0)

    def step(self, x):
        self.n += 1
        return self.uses(self, x)


USES = {
    "arithmetic": lambda s, x: x * (s.n // 3) + (s.n % 5) - abs(s.n - 10) + (-s.n) + s.n ** 2 + (7 - s.n) * 2,
    "a tensor times it": lambda s, x: s.n * x + x * s.n,
    "a branch on it": lambda s, x: x * 10 if s.n > 5 else x - 1,
    "a parity branch": lambda s, x: x + 1 if s.n % 2 == 0 else x - 1,
    "indexing by it": lambda s, x: x + s.table[s.n % 6] + s.table[s.n % 3:].sum(),
    "a range of it": lambda s, x: sum((x * k for k in range(s.n % 3)), x),
    "max and min": lambda s, x: x * max(s.n, 4) + min(s.n, 2),
    "true division": lambda s, x: x * (s.n / 4),
    "a float operand": lambda s, x: x * (s.n * 0.5) + (s.n < 2.5),
    "a string of it": lambda s, x: x * len(f"{s.n}"),
    "a dict keyed by it": lambda s, x: x * {0: 2.0, 1: 3.0}[s.n % 2],
}


@pytest.mark.parametrize("use", list(USES))
def test_a_counter_computes_as_its_int_call_by_call(use):
    ours, eager = Stepper(USES[use]), Stepper(USES[use])
    compiled = kiln.compile(ours.step)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the per-value uses run eagerly past recompile_limit, warned
        for call in range(12):
            x = kiln.tensor(np.random.default_rng(call).standard_normal(3))
            np.testing.assert_allclose(np.asarray(compiled(x)), np.asarray(eager.step(x)), rtol=1e-6, atol=1e-6)
            assert ours.n == eager.n == call + 1 and type(ours.n) is int


@pytest.mark.parametrize("use, traces", [("arithmetic", 2), ("a tensor times it", 2), ("a parity branch", 3),
                                         ("a branch on it", 3), ("indexing by it", 4)])
def test_uses_that_need_no_value_trace_a_few_times_at_most(use, traces):
    """The first value, then one variant per branch taken (indexing: per length of the slice ``[n % 3:]``; the index
    ``[n % 6]`` is traced)."""
    stepper = Stepper(USES[use])
    compiled = kiln.compile(stepper.step, fullgraph=True)
    for call in range(20):
        compiled(kiln.ones(3))
    assert sum(v is not None for v in compiled.variants.values()) + sum(map(len, compiled.superseded.values())) == traces


class Checked:
    def __init__(self):
        self.n = 0

    def step(self, x):
        self.n += 1
        assert isinstance(self.n, int), "a real int"  # not so for a DynamicInt: traced with the value instead
        return x * self.n


def test_a_counter_the_python_needs_as_an_int_is_guarded_on_its_value_again():
    checked = Checked()
    compiled = kiln.compile(checked.step)
    assert [compiled(kiln.ones(1)).item() for _ in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert compiled.dynamic_ints.static and not compiled.dynamic_ints.marked
    strict = kiln.compile(Checked().step, fullgraph=True)
    with pytest.raises(KilnError, match=r"Checked\.n at every call"):
        for _ in range(10):
            strict(kiln.ones(1))


def _alternating(lib):
    class Alternating(lib.nn.Module):
        """A forward that counts its calls and takes a branch on the count's parity."""

        def __init__(self):
            super().__init__()
            self.linear, self.calls = lib.nn.Linear(3, 2).double(), 0

        def forward(self, x):
            self.calls += 1
            return self.linear(x) if self.calls % 2 else self.linear(x).tanh() * 2

    return Alternating()


def test_a_compiled_forward_whose_branch_flips_at_every_call_keeps_both_variants_and_trains_as_torch():
    """A compiled forward for ``loss.backward()`` branching on a counter's parity: each flip failed the other
    branch's guard and traced again, until ``recompile_limit`` (then every call ran eagerly, warned). Earlier training
    forwards are kept now, as the inference calls' are: one variant per branch (a count set by a training forward is a
    number that changes from its first trace)."""
    from oracles import require_torch

    torch = require_torch()
    kiln.manual_seed(0)
    ours, theirs = _alternating(kiln), _alternating(torch)
    theirs.load_state_dict({name: torch.tensor(np.asarray(value)) for name, value in ours.state_dict().items()})
    compiled = kiln.compile(ours, fullgraph=True)
    optimizers = kiln.optim.SGD(ours.parameters(), lr=0.1), torch.optim.SGD(theirs.parameters(), lr=0.1)
    for call in range(20):
        x = np.random.default_rng(call).standard_normal((4, 3))
        for model, optimizer, lib in ((compiled, optimizers[0], kiln), (theirs, optimizers[1], torch)):
            optimizer.zero_grad()
            (model(lib.tensor(x)) ** 2).sum().backward()
            optimizer.step()
        for mine, expected in zip(ours.parameters(), theirs.parameters(), strict=True):
            np.testing.assert_allclose(np.asarray(mine.data), expected.detach().numpy(), rtol=1e-12)
    assert ours.calls == theirs.calls == 20 and type(ours.calls) is int
    kept = sum(map(len, compiled.training_superseded.values()))
    assert sum(v is not None for v in compiled.training_variants.values()) + kept == 2
