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
