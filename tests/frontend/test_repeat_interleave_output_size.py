"""``repeat_interleave(..., output_size=n)`` as torch 2.13's: the length along ``dim`` is checked against the repeats
(a ``RuntimeError`` when it differs), and in a ``kiln.compile``d function it makes per-element counts traceable (the
result's shape no longer depends on their values), the reason torch has it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

X = np.arange(12.0).reshape(4, 3)
MATCHING = [  # (repeats, dim, output_size)
    (2, None, 24), (3, 1, 9), (2, -2, 8), ([1, 0, 2, 3], 0, 6), ([2], 1, 6), ([1, 2, 1], 1, 4), ([0, 0, 0, 0], 0, 0)]
MISMATCHED = [(2, None, 20), (3, 1, 10), ([1, 0, 2, 3], 0, 5), ([1, 0, 2, 3], 0, 7), ([2], 1, 5)]


def _call(lib, repeats, dim, output_size):
    repeats = repeats if isinstance(repeats, int) else lib.tensor(repeats)
    return lib.tensor(X).repeat_interleave(repeats, dim, output_size=output_size)


@pytest.mark.parametrize("repeats, dim, output_size", MATCHING)
def test_a_matching_output_size_gives_torchs_result(repeats, dim, output_size):
    torch = require_torch()
    expected = _call(torch, repeats, dim, output_size).numpy()
    np.testing.assert_array_equal(_call(kiln, repeats, dim, output_size).numpy(), expected)


@pytest.mark.parametrize("repeats, dim, output_size", MISMATCHED)
def test_an_output_size_the_repeats_do_not_give_is_a_runtime_error_as_in_torch(repeats, dim, output_size):
    torch = require_torch()
    with pytest.raises(RuntimeError):
        _call(torch, repeats, dim, output_size)
    with pytest.raises(RuntimeError, match=f"repeat_interleave: Invalid output_size, expected \\d+ but got {output_size}"):
        _call(kiln, repeats, dim, output_size)


def test_the_counts_only_form_checks_output_size_as_torchs():
    torch = require_torch()
    np.testing.assert_array_equal(kiln.repeat_interleave(kiln.tensor([1, 3]), output_size=4).numpy(),
                                  torch.repeat_interleave(torch.tensor([1, 3]), output_size=4).numpy())
    with pytest.raises(RuntimeError):
        torch.repeat_interleave(torch.tensor([1, 3]), output_size=3)
    with pytest.raises(RuntimeError, match="expected 4 but got 3"):
        kiln.repeat_interleave(kiln.tensor([1, 3]), output_size=3)


def _spread(x, counts):
    return (x.repeat_interleave(counts, dim=0, output_size=6) * 2).cumsum(1)


def test_traced_counts_with_an_output_size_compile_and_give_torchs_result():
    torch = require_torch()
    compiled = kiln.compile(_spread)
    for counts in ([1, 2, 0, 3], [2, 2, 1, 1], [0, 0, 6, 0]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # traced, not run eagerly
            ours = compiled(kiln.tensor(X), kiln.tensor(np.array(counts)))
        np.testing.assert_array_equal(ours.numpy(), _spread(torch.tensor(X), torch.tensor(counts)).numpy())
    graphs = [variant.graph for variant in compiled.variants.values() if hasattr(variant, "graph")]
    assert len(graphs) == 1  # one graph for every count of the same sum


def test_traced_counts_without_an_output_size_say_to_pass_it():
    with pytest.raises(kiln.KilnError, match="output_size=<their sum>"):
        kiln.trace(lambda x, c: x.repeat_interleave(c, dim=0), kiln.TensorSpec((4, 3)), kiln.TensorSpec((4,), "i64"))
