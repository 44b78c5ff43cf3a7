"""``F.embedding_bag`` / ``nn.EmbeddingBag`` against torch in float64, values and gradients (of the weight and of
``per_sample_weights``): every mode with ``padding_idx``, ``per_sample_weights``, ``include_last_offset``, empty bags
and 2-D input; and ``mode='max'`` where the old masked max went wrong: a bag of -inf (its gradient went to a slot
outside the bag, so it was lost) and NaN, which PyTorch's kernel takes only as a bag's first element."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from oracles import require

_FLAT = np.array([1, 4, 7, 4, 2, 0, 9, 3, 3, 5, 0, 9], dtype=np.int64)
_LAYOUTS = {  # input, offsets, include_last_offset
    "rows": (_FLAT.reshape(3, 4), None, False),
    "offsets": (_FLAT, np.array([0, 3, 5, 10]), False),
    "last_offset": (_FLAT, np.array([0, 3, 5, 12]), True),
    "empty_bags": (_FLAT, np.array([0, 3, 3, 8, 12]), False),
}


def _weight(special: str) -> np.ndarray:
    weight = np.random.default_rng(0).standard_normal((10, 3))
    weight[4, 1] = weight[7, 1] = 5.0  # a tie in bag 0
    if special in ("ninf", "both"):
        weight[[0, 9], 2] = -np.inf  # the last bag's third feature: -inf only
    if special in ("nan", "both"):
        weight[[4, 7], 0] = np.nan  # NaN after the first element of bag 0, first in bag 1
        weight[2, 1] = np.nan
    return weight


def _assert_bag_matches_torch(torch, layout: str, mode: str, padding_idx, per_sample: bool, special: str) -> None:
    indices, offsets, last = _LAYOUTS[layout]
    weight = _weight(special)
    samples = np.random.default_rng(1).standard_normal(indices.shape) if per_sample else None
    expected_weight = torch.tensor(weight, requires_grad=True)
    expected_samples = torch.tensor(samples, requires_grad=True) if per_sample else None
    expected = torch.nn.functional.embedding_bag(torch.tensor(indices), expected_weight, None if offsets is None else torch.tensor(offsets),
                                                 mode=mode, per_sample_weights=expected_samples, include_last_offset=last,
                                                 padding_idx=padding_idx)
    cotangent = np.random.default_rng(2).standard_normal(tuple(expected.shape))
    (expected * torch.tensor(cotangent)).sum().backward()

    def ours(w, *s):
        return F.embedding_bag(kiln.tensor(indices), w, None if offsets is None else kiln.tensor(offsets), mode=mode,
                               per_sample_weights=s[0] if s else None, include_last_offset=last, padding_idx=padding_idx)

    np.testing.assert_allclose(ours(kiln.tensor(weight), *([kiln.tensor(samples)] if per_sample else [])).numpy(),
                               expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    loss = lambda *args: (ours(*args) * kiln.tensor(cotangent)).sum()  # noqa: E731
    if per_sample:
        weight_gradient, sample_gradient = kiln.grad(loss, argnums=(0, 1))(weight, samples)
        np.testing.assert_allclose(sample_gradient, expected_samples.grad.numpy(), rtol=1e-12, atol=1e-15)
    else:
        weight_gradient = kiln.grad(loss)(weight)
    np.testing.assert_allclose(weight_gradient, expected_weight.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("padding_idx", [None, 4, -1])
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
@pytest.mark.parametrize(("mode", "per_sample"), [("sum", False), ("sum", True), ("mean", False), ("max", False)])
def test_embedding_bag_matches_torch(mode, per_sample, layout, padding_idx):
    _assert_bag_matches_torch(require("torch"), layout, mode, padding_idx, per_sample, "plain")


@pytest.mark.parametrize("special", ["ninf", "nan", "both"])
@pytest.mark.parametrize("padding_idx", [None, 4])
@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_max_bags_of_minus_infinity_and_nan_pick_as_torch(layout, padding_idx, special):
    _assert_bag_matches_torch(require("torch"), layout, "max", padding_idx, False, special)


def test_the_layer_in_max_mode_matches_torch_on_a_bag_of_minus_infinity():
    torch = require("torch")
    weight = _weight("ninf")
    theirs = torch.nn.EmbeddingBag.from_pretrained(torch.tensor(weight), freeze=False, mode="max")
    ours = nn.EmbeddingBag(10, 3, mode="max", _weight=weight)
    indices, offsets = torch.tensor([[0, 9], [1, 2]]), None
    expected = theirs(indices, offsets)
    expected.sum().backward()
    np.testing.assert_array_equal(ours(kiln.tensor(indices.numpy())).numpy(), expected.detach().numpy())
    gradient = kiln.grad(lambda w: F.embedding_bag(kiln.tensor(indices.numpy()), w, mode="max").sum())(weight)
    np.testing.assert_array_equal(gradient, theirs.weight.grad.numpy())
