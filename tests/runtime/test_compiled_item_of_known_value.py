"""``.item()`` in a compiled function of a tensor built from constants only (Transformer-XL's
``if attn_mask is not None and attn_mask.any().item():`` on ``torch.triu(x.new_ones(q, k), diagonal=1 + m)``) gives its
value while tracing, as the call would: kiln raised "item() of a traced tensor", so the whole step could not be
compiled. A value that depends on an input still raises (and a non-fullgraph compile runs eagerly)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def masked_scores(torch, mlen):
    def scores(x):
        qlen, klen = x.shape[0], x.shape[0] + mlen
        mask = torch.triu(x.new_ones(qlen, klen), diagonal=1 + mlen).bool()
        score = x[:, :1] * torch.ones(qlen, klen)
        if mask.any().item():
            score = score.masked_fill(mask, -float("inf"))
        return torch.softmax(score, dim=1) * (1.0 + mask.sum().item())

    return scores


@pytest.mark.parametrize("rows, mlen", [(3, 0), (3, 2), (1, 0)], ids=["causal", "with memory", "nothing masked"])
def test_item_of_a_constant_mask_in_a_compiled_function_as_torch(rows, mlen):
    torch = require_torch()
    x = np.random.default_rng(0).standard_normal((rows, 2))
    theirs = masked_scores(torch, mlen)(torch.tensor(x)).numpy()
    ours = kiln.compile(masked_scores(kiln, mlen), fullgraph=True)(kiln.tensor(x))
    np.testing.assert_allclose(np.array(ours.numpy()), theirs, rtol=1e-15, atol=0)


def test_item_of_an_input_dependent_value_still_raises():
    with pytest.raises(Exception, match=r"item\(\) of a traced"):
        kiln.compile(lambda x: x * x.sum().item(), fullgraph=True)(kiln.ones(3))
