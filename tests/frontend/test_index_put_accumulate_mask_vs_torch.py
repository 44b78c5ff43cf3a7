"""``index_put_`` with ``accumulate=True`` and a bool mask (``x.index_put_((mask,), v, accumulate=True)``): torch adds
the values at the mask's true positions; kiln refused it ("takes integer index tensors"). A mask whose values are
known (eager, or specialized in ``kiln.compile``) stands for its true positions, as in indexing (``tensor_more.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch

MASK = [True, False, True, False]
CASES = {
    "one_value": (lambda lib: lib.zeros(4), lambda lib: (lib.tensor(MASK),), lambda lib: lib.tensor([1.5])),
    "0d_value": (lambda lib: lib.ones(4), lambda lib: (lib.tensor(MASK),), lambda lib: lib.tensor(2.0)),
    "per_element": (lambda lib: lib.ones(4), lambda lib: (lib.tensor(MASK),), lambda lib: lib.tensor([1.0, 2.0])),
    "rows": (lambda lib: lib.zeros(4, 2), lambda lib: (lib.tensor(MASK),), lambda lib: lib.tensor([[1.0, 2.0], [3.0, 4.0]])),
    "2d_mask": (lambda lib: lib.zeros(2, 2), lambda lib: (lib.tensor([[True, False], [True, True]]),),
                lambda lib: lib.tensor([1.0, 2.0, 3.0])),
    "mask_and_index": (lambda lib: lib.zeros(4, 3), lambda lib: (lib.tensor(MASK), lib.tensor([0, 2])),
                       lambda lib: lib.tensor([5.0, 6.0])),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_accumulate_with_a_bool_mask_adds_at_its_true_positions_with_torchs_gradients(name):
    require_torch()
    results = []
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        make, indices, values = CASES[name]
        x = make(lib).double().requires_grad_()
        v = values(lib).double().requires_grad_()
        out = (x * 1.0).index_put_(indices(lib), v * 1.0, accumulate=True)
        (out * lib.arange(out.numel(), dtype=lib.float64).reshape(out.shape)).sum().backward()
        results.append([np.asarray(out.detach()).tolist(), np.asarray(x.grad).tolist(), np.asarray(v.grad).tolist()])
    assert results[0] == results[1]
