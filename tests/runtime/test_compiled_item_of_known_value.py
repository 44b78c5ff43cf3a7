"""``.item()`` in a compiled function of a tensor built from constants only (Transformer-XL's
``if attn_mask is not None and attn_mask.any().item():`` on ``torch.triu(x.new_ones(q, k), diagonal=1 + m)``) gives its
value while tracing, as the call would: kiln raised "item() of a traced tensor", so the whole step could not be
compiled. A value that depends on an input is specialized and guarded (``tests/runtime/test_compiled_value_guards.py``);
one that depends on a trained parameter or a random draw still raises."""

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


def test_item_of_a_trained_parameter_or_a_random_draw_still_raises():
    weight = kiln.nn.Parameter(kiln.ones(3))
    with pytest.raises(Exception, match=r"item\(\) of a traced"):
        kiln.compile(lambda x: x * (weight * 2).sum().item(), fullgraph=True)(kiln.ones(3))
    with pytest.raises(Exception, match=r"item\(\) of a traced"):
        kiln.compile(lambda x: x * kiln.rand(1).item(), fullgraph=True, seed=0)(kiln.ones(3))
