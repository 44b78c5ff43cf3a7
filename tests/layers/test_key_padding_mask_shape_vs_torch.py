"""A ``key_padding_mask`` that is not ``(N, S)`` (the translation tutorial's ``(src == PAD_IDX)`` left sequence-first,
without ``.transpose(0, 1)``) is refused by ``nn.MultiheadAttention`` (fused and general paths),
``F.multi_head_attention_forward`` and the transformer layers, as torch refuses it, with a message naming the expected
shape and the fix; kiln failed in a broadcast deep inside attention ("the mask tensor<5x1x1x1xbool> does not broadcast
to the scores"). Right-shaped masks still give torch's outputs, and a compiled call with a symbolic batch still
compiles."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import torch_twins

SEQUENCE, BATCH, EMBED = 5, 2, 4


def _calls(lib, module, mask, query):
    return {
        "fused": lambda: module(query, query, query, key_padding_mask=mask, need_weights=False),
        "with weights": lambda: module(query, query, query, key_padding_mask=mask),
        "functional": lambda: lib.nn.functional.multi_head_attention_forward(
            query, query, query, EMBED, 2, module.in_proj_weight, module.in_proj_bias, None, None, False, 0.0,
            module.out_proj.weight, module.out_proj.bias, key_padding_mask=mask),
    }


@pytest.mark.parametrize("batch", [BATCH, 1])
@pytest.mark.parametrize("call", ["fused", "with weights", "functional"])
def test_sequence_first_key_padding_mask_is_refused_as_torch(call, batch):
    torch, module, twin = torch_twins(lambda lib: lib.nn.MultiheadAttention(EMBED, 2))
    mask = np.zeros((SEQUENCE, batch), dtype=bool)  # (S, N): the transpose forgotten
    query = np.zeros((SEQUENCE, batch, EMBED), dtype=np.float32)
    with pytest.raises(AssertionError, match=f"shape\\[0\\] to be {batch}"):
        _calls(torch, twin, torch.tensor(mask), torch.tensor(query))[call]()
    with pytest.raises(TraceError, match=rf"must be \(N, S\) = \({batch}, {SEQUENCE}\).*transpose\(0, 1\)"):
        _calls(kiln, module, kiln.tensor(mask), kiln.tensor(query))[call]()


def test_encoder_layer_refuses_a_sequence_first_padding_mask_as_torch():
    torch, layer, twin = torch_twins(lambda lib: lib.nn.TransformerEncoderLayer(EMBED, 2, 8, dropout=0.0))
    mask = np.zeros((SEQUENCE, BATCH), dtype=bool)
    with pytest.raises(AssertionError):
        twin(torch.zeros(SEQUENCE, BATCH, EMBED), src_key_padding_mask=torch.tensor(mask))
    with pytest.raises(TraceError, match="key_padding_mask must be"):
        layer(kiln.zeros(SEQUENCE, BATCH, EMBED), src_key_padding_mask=kiln.tensor(mask))


@pytest.mark.parametrize("batch_first", [False, True])
def test_right_shaped_masks_match_torch(batch_first):
    torch, module, twin = torch_twins(lambda lib: lib.nn.MultiheadAttention(EMBED, 2, batch_first=batch_first).double())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, SEQUENCE, EMBED) if batch_first else (SEQUENCE, BATCH, EMBED))
    mask = np.zeros((BATCH, SEQUENCE), dtype=bool)
    mask[1, 3:] = True
    ours = module(kiln.tensor(x), kiln.tensor(x), kiln.tensor(x), key_padding_mask=kiln.tensor(mask))
    theirs = twin(torch.tensor(x), torch.tensor(x), torch.tensor(x), key_padding_mask=torch.tensor(mask))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(np.array(a.detach()), b.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_compiled_batch_first_attention_with_a_mask_argument_serves_every_batch():
    """The mask's batch dim is the graph's symbolic one: the check leaves it to the shape rules."""
    torch, module, twin = torch_twins(lambda lib: lib.nn.MultiheadAttention(EMBED, 2, batch_first=True).double())
    attend = kiln.compile(lambda x, mask: module(x, x, x, key_padding_mask=mask, need_weights=False)[0], fullgraph=True)
    for batch in (2, 3):
        x = np.random.default_rng(batch).standard_normal((batch, SEQUENCE, EMBED))
        mask = np.arange(SEQUENCE) >= np.arange(batch)[:, None] + 2
        theirs = twin(torch.tensor(x), torch.tensor(x), torch.tensor(x), key_padding_mask=torch.tensor(mask))[0]
        np.testing.assert_allclose(np.array(attend(kiln.tensor(x), kiln.tensor(mask))), theirs.detach().numpy(),
                                   rtol=1e-10, atol=1e-12)
