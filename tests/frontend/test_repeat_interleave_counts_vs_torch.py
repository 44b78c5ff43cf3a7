"""``repeat_interleave`` with per-element counts (a tensor or list), eagerly, as PyTorch's: values and gradients in
float64; ``torch.repeat_interleave(counts)`` (each index repeated); the one-count tensor; errors for a trace and for
bad counts. A MoE's token routing repeats each token by its expert count this way."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

CASES = {
    "rows by a tensor": lambda lib, x: x.repeat_interleave(lib.tensor([1, 0, 2]), dim=0),
    "columns by a tensor": lambda lib, x: lib.repeat_interleave(x, lib.tensor([2, 1, 0, 3]), dim=1),
    "negative dim": lambda lib, x: x.repeat_interleave(lib.tensor([3, 0, 1, 1]), dim=-1),
    "one count in a tensor": lambda lib, x: x.repeat_interleave(lib.tensor([2]), dim=1),
    "flattened": lambda lib, x: lib.repeat_interleave(x, lib.tensor(np.arange(12) % 3)),
    "all zero": lambda lib, x: x.repeat_interleave(lib.tensor([0, 0, 0]), dim=0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_element_counts_as_torch(name):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x = lib.tensor(np.linspace(-1, 2, 12).reshape(3, 4), requires_grad=True)
        out = CASES[name](lib, x)
        (out.sin() * lib.arange(out.numel(), dtype=lib.float64).reshape(out.shape)).sum().backward()
        results.append((tuple(out.shape), out.detach().numpy(), np.asarray(x.grad)))
    (shape, ours, our_grad), (their_shape, theirs, their_grad) = results
    assert shape == their_shape
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(our_grad, their_grad, rtol=1e-14, atol=1e-15)


def test_counts_alone_repeat_each_index_as_torch():
    torch = require_torch()
    for counts in ([2, 0, 3], [1], [0, 4]):
        ours = kiln.repeat_interleave(kiln.tensor(counts))
        theirs = torch.repeat_interleave(torch.tensor(counts))
        assert ours.tolist() == theirs.tolist() and ours.dtype == kiln.int64


def test_bad_counts_are_refused_with_the_reason():
    x = kiln.tensor(np.zeros((3, 4)))
    with pytest.raises(kiln.KilnError, match="one per slice along dim 0"):
        x.repeat_interleave(kiln.tensor([1, 2]), dim=0)
    with pytest.raises(kiln.KilnError, match="non-negative integers"):
        x.repeat_interleave(kiln.tensor([1, -1, 2]), dim=0)


def test_a_trace_asks_for_an_int_count():
    counts = kiln.tensor([1, 0, 2])
    with pytest.raises(kiln.KilnError, match="pass an int count"):
        kiln.compile(lambda x: x.repeat_interleave(counts, dim=0))(np.zeros((3, 2)))
