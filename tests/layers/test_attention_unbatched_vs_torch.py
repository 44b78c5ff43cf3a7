"""Unbatched ``(L, E)`` inputs of ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``/``DecoderLayer`` and
``nn.Transformer``, as torch 2.13 takes them (a batch of one whatever ``batch_first``; the key padding mask ``(S,)``;
the weights ``(L, S)`` or ``(heads, L, S)``). kiln failed on them (a shape error deep in the projections, or refused
by name). Values, weights and input and parameter gradients against torch in float64 (rtol 1e-10)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

E, HEADS, L, S = 4, 2, 5, 3


def lockstep(make, call):
    """``call(module, lib, inputs)``'s outputs and the gradients of their squares' sum, kiln then torch (weights copied)."""
    rng = np.random.default_rng(0)
    arrays = {"query": rng.standard_normal((L, E)), "memory": rng.standard_normal((S, E)),
              "kpm": np.array([False, True, False]), "causal": np.triu(np.ones((L, L), bool), 1)}
    records, state = [], None
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        kiln.manual_seed(0)
        module = make(nn).eval()
        if state is not None:
            module.load_state_dict({key: lib.tensor(value) for key, value in state.items()})
        state = {key: np.array(value.detach().numpy()) for key, value in module.state_dict().items()}
        inputs = {key: lib.tensor(value, requires_grad=value.dtype == np.float64) for key, value in arrays.items()}
        outputs = [out for out in call(module, inputs) if out is not None]
        sum((out * out).sum() for out in outputs).backward()
        grads = [np.array(inputs[key].grad.numpy()) for key in ("query", "memory") if inputs[key].grad is not None]
        grads += [np.array(p.grad.numpy()) for p in module.parameters() if p.grad is not None]
        records.append(([np.array(out.detach().numpy()) for out in outputs], grads))
    return records


def assert_same(records):
    (ours, our_grads), (theirs, their_grads) = records
    assert [o.shape for o in ours] == [t.shape for t in theirs] and len(our_grads) == len(their_grads)
    for mine, torch_value in zip(ours + our_grads, theirs + their_grads):
        np.testing.assert_allclose(mine, torch_value, rtol=1e-10, atol=1e-12)


MHA_CALLS = {
    "self": lambda m, x: m(x["query"], x["query"], x["query"]),
    "cross_padding_mask": lambda m, x: m(x["query"], x["memory"], x["memory"], key_padding_mask=x["kpm"]),
    "per_head_weights_causal": lambda m, x: m(x["query"], x["query"], x["query"], attn_mask=x["causal"],
                                              average_attn_weights=False),
    "no_weights": lambda m, x: m(x["query"], x["memory"], x["memory"], need_weights=False),
}


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("call", sorted(MHA_CALLS))
def test_unbatched_multihead_attention_as_torch(call, batch_first, float64_default):
    assert_same(lockstep(lambda nn: nn.MultiheadAttention(E, HEADS, batch_first=batch_first), MHA_CALLS[call]))


@pytest.mark.parametrize("options", [dict(kdim=3, vdim=2), dict(add_bias_kv=True, add_zero_attn=True)],
                         ids=["kdim_vdim", "bias_kv_zero_attn"])
def test_unbatched_general_multihead_attention_as_torch(options, float64_default):
    """The general path (``F.multi_head_attention_forward``)."""
    def call(m, x):
        key = x["memory"][:, :options.get("kdim", E)]
        return m(x["query"], key, x["memory"][:, :options.get("vdim", E)], key_padding_mask=x["kpm"])

    assert_same(lockstep(lambda nn: nn.MultiheadAttention(E, HEADS, **options), call))


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # torch's, about its own fast path
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_transformer_layers_as_torch(batch_first, float64_default):
    options = dict(dim_feedforward=8, dropout=0.0, batch_first=batch_first)
    assert_same(lockstep(lambda nn: nn.TransformerEncoderLayer(E, HEADS, **options),
                         lambda m, x: (m(x["query"], src_mask=x["causal"]),)))
    assert_same(lockstep(lambda nn: nn.TransformerDecoderLayer(E, HEADS, **options),
                         lambda m, x: (m(x["query"], x["memory"], memory_key_padding_mask=x["kpm"]),)))
    assert_same(lockstep(lambda nn: nn.Transformer(E, HEADS, 1, 1, **options),
                         lambda m, x: (m(x["memory"], x["query"], tgt_mask=x["causal"]),)))
