"""``x[mask] = values`` with one value per selected element (``inputs[m] = random_words[m]``, Hugging Face's MLM
collator), eagerly, as PyTorch 2.13's: the values land in row-major order of the mask's True positions, a mask over the
leading dims takes one row per selected row, gradients reach ``x`` outside the mask and ``values``. Before, kiln
refused it ("the number of selected elements is not known while tracing") though eagerly the count is known."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def assign_and_backward(lib, x0, mask, values0, mask_rows):
    x = lib.tensor(x0, requires_grad=True)
    values = lib.tensor(values0, requires_grad=True)
    y = x * 1.0
    y[lib.tensor(mask)] = values * 2.0
    (y * lib.tensor(np.arange(y.numel(), dtype=np.float64).reshape(y.shape))).sum().backward()
    return y.detach().numpy(), x.grad.numpy(), values.grad.numpy()


@pytest.mark.parametrize("mask_rows", [False, True], ids=["element-mask", "row-mask"])
def test_per_element_values_and_gradients_as_torch(mask_rows):
    torch = require_torch()
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((4, 5))
    mask = rng.random((4,) if mask_rows else (4, 5)) < 0.5
    values0 = rng.standard_normal((int(mask.sum()), 5) if mask_rows else (int(mask.sum()),))
    for ours, theirs in zip(assign_and_backward(kiln, x0, mask, values0, mask_rows),
                            assign_and_backward(torch, x0, mask, values0, mask_rows)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)


def test_integer_tokens_replaced_where_drawn_as_torch():
    torch = require_torch()
    rng = np.random.default_rng(1)
    ids, mask, words = rng.integers(4, 30, (3, 7)), rng.random((3, 7)) < 0.4, rng.integers(0, 30, (3, 7))
    results = []
    for lib in (kiln, torch):
        inputs, replaced, random_words = lib.tensor(ids), lib.tensor(mask), lib.tensor(words)
        inputs[replaced] = random_words[replaced]
        results.append(np.asarray(inputs.numpy()))
    np.testing.assert_array_equal(results[0], results[1])
    assert results[0].dtype == np.int64


def test_a_count_other_than_the_masks_is_refused():
    x = kiln.zeros(2, 3)
    with pytest.raises(Exception, match=r"The expanded size of the tensor \(3\) must match the existing size \(2\)"):
        x[kiln.tensor([[True, False, True], [False, False, True]])] = kiln.tensor([1.0, 2.0])
