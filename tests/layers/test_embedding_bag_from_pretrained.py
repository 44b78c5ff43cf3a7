"""``nn.EmbeddingBag.from_pretrained`` as torch 2.13's (a DLRM porting probe loads pretrained tables with it; it was
missing): the table, frozen by default, every option passed on; values and gradients vs torch in float64."""

from __future__ import annotations

import numpy as np
import pytest

import kiln

TABLE = np.random.default_rng(0).standard_normal((10, 3))
INDICES, OFFSETS = np.array([1, 2, 4, 5, 4, 3, 2, 9]), np.array([0, 2, 2, 5])


def _bag_outputs(lib, freeze, options, offsets):
    bag = lib.nn.EmbeddingBag.from_pretrained(lib.tensor(TABLE), freeze=freeze, **options)
    out = bag(lib.tensor(INDICES), lib.tensor(offsets))
    if not freeze:
        (out * lib.tensor(np.arange(out.numel()).reshape(out.shape), dtype=out.dtype)).sum().backward()
    grad = None if bag.weight.grad is None else bag.weight.grad.numpy()
    return bag.weight.requires_grad, out.detach().numpy(), grad, bag.mode, bag.padding_idx, bag.include_last_offset


@pytest.mark.parametrize("freeze", [True, False])
@pytest.mark.parametrize("options, offsets", [
    ({}, OFFSETS),
    ({"mode": "sum", "include_last_offset": True}, np.append(OFFSETS, len(INDICES))),
    ({"mode": "max"}, OFFSETS),
    ({"mode": "mean", "padding_idx": 4}, OFFSETS),
    ({"mode": "sum", "max_norm": 1.0}, OFFSETS),
])
def test_from_pretrained_is_torchs(freeze, options, offsets, float64_default):
    torch = float64_default
    theirs, ours = (_bag_outputs(lib, freeze, options, offsets) for lib in (torch, kiln))
    assert ours[0] == theirs[0] == (not freeze)
    assert ours[3:] == theirs[3:]
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-14, atol=1e-15)
    if freeze:
        assert ours[2] is None and theirs[2] is None
    else:
        np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-14, atol=1e-15)


def test_from_pretrained_refuses_a_vector():
    with pytest.raises(ValueError, match="EmbeddingBag.from_pretrained: embeddings must be 2-D"):
        kiln.nn.EmbeddingBag.from_pretrained(kiln.ones(4))
