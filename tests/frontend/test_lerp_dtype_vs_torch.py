"""``lerp``/``lerp_``/``_foreach_lerp_`` with operands of another dtype (openai/sparse_autoencoder's ``EmaModel``:
``torch._foreach_lerp_(self.ema_weights, list(self.model.parameters()), 1 - m)``, float32 EMA weights of float64
parameters): torch refuses an ``end`` of another dtype and a ``weight`` tensor with dims of another dtype (a 0-d weight
may differ) with a RuntimeError; kiln promoted silently. Same-dtype results stay torch's."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch

REFUSED = {
    "end float64": lambda L: L.lerp(L.zeros(3), L.ones(3, dtype=L.float64), 0.1),
    "end float32 of float64": lambda L: L.lerp(L.zeros(3, dtype=L.float64), L.ones(3), 0.1),
    "end 0-d float64": lambda L: L.lerp(L.zeros(3), L.tensor(1.0, dtype=L.float64), 0.1),
    "end int64": lambda L: L.zeros(3).lerp(L.ones(3, dtype=L.int64), 0.1),
    "end float32 of float16": lambda L: L.zeros(3, dtype=L.float16).lerp(L.ones(3), 0.5),
    "weight float64 with dims": lambda L: L.lerp(L.zeros(3), L.ones(3), L.full((3,), 0.1, dtype=L.float64)),
    "in place": lambda L: L.zeros(3).lerp_(L.ones(3, dtype=L.float64), 0.1),
    "foreach": lambda L: L._foreach_lerp_([L.zeros(3)], [L.ones(3, dtype=L.float64)], 0.1),
}


def _message(make, name):
    torch, _, _ = libraries(name)
    with pytest.raises(RuntimeError) as caught:
        make(torch)
    return str(caught.value).strip().splitlines()[-1].strip()


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_lerp_of_another_dtype_is_refused_as_torch(case):
    require_torch()
    assert _message(REFUSED[case], "kiln") == _message(REFUSED[case], "torch")


START, END = [0.0, 1.0, 2.0], [4.0, 5.0, 7.0]
ACCEPTED = {
    "0-d float64 weight": lambda L: L.lerp(L.tensor(START), L.tensor(END), L.tensor(0.3, dtype=L.float64)),
    "in place, 0-d float64 weight": lambda L: L.tensor(START).lerp_(L.tensor(END), L.tensor(0.7, dtype=L.float64)),
    "foreach, number weight": lambda L: L._foreach_lerp_([L.tensor(START)], [L.tensor(END)], 0.1)[0],
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_lerp_operands_torch_accepts_give_torch_values(case):
    require_torch()
    ours, theirs = (ACCEPTED[case](libraries(name)[0]) for name in ("kiln", "torch"))
    assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
