"""``print(model.fc.weight)`` and ``print(bn.running_mean)`` as torch prints them: a parameter as ``Parameter
containing:`` over its values (``requires_grad=True`` where it has it, the dtype where it is not the default), a buffer
as a plain tensor (kiln printed ``Parameter(shape=(2,), dtype=float32)`` and ``Buffer(shape=(), dtype=int32)``, no
values: the LitEma probe printed its ``num_updates`` that way). Each case runs on kiln and torch 2.13; the values are
whole numbers, which both print alike (kiln's tensor repr prints ``0.5`` where torch prints ``0.5000``)."""

from __future__ import annotations

import pytest

from oracles import libraries, require_torch


def _counter(lib):
    module = lib.nn.Module()
    module.register_buffer("num_updates", lib.tensor(0, dtype=lib.int32))
    module.num_updates += 1
    return module.num_updates


CASES = {
    "parameter": lambda lib: lib.nn.Parameter(lib.tensor([3.0, -1.0])),
    "frozen float64 parameter": lambda lib: lib.nn.Parameter(lib.ones(2, 2, dtype=lib.float64), requires_grad=False),
    "linear bias": lambda lib: _bias(lib),
    "running mean": lambda lib: lib.nn.BatchNorm1d(3).running_mean,
    "num batches tracked": lambda lib: lib.nn.BatchNorm1d(3).num_batches_tracked,
    "int32 buffer after +=": _counter,
    "list of parameters": lambda lib: list(lib.nn.LayerNorm(2).parameters()),
}


def _bias(lib):
    linear = lib.nn.Linear(2, 1)
    with lib.no_grad():
        linear.bias.fill_(2.0)
    return linear.bias


@pytest.mark.parametrize("case", CASES)
def test_repr_as_torch(case):
    require_torch()
    texts = {name: repr(CASES[case](libraries(name)[0])) for name in ("kiln", "torch")}
    assert texts["kiln"].replace("kiln.", "torch.") == texts["torch"]
