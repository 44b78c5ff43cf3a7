"""Each new layer against its ``torch.nn`` counterpart with copied weights: outputs, parameter and input gradients (f32, rtol 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from layer_parity import assert_layer_matches_torch
from oracles import require

RNG = np.random.default_rng(0)


def normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_embedding():
    torch = require("torch")
    kiln.manual_seed(0)
    ids = np.array([[1, 3, 3], [0, 6, 1]], dtype=np.int64)
    assert_layer_matches_torch(torch, nn.Embedding(7, 5), torch.nn.Embedding(7, 5), [ids])


@pytest.mark.parametrize("shape", [(5,), (3, 5)])
def test_layer_norm(shape):
    torch = require("torch")
    module, reference = nn.LayerNorm(shape, eps=1e-4), torch.nn.LayerNorm(shape, eps=1e-4)
    module.weight.data[...] = normal(*shape)
    module.bias.data[...] = normal(*shape)
    assert_layer_matches_torch(torch, module, reference, [normal(2, 3, 5) * 3 + 1])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    torch = require("torch")
    assert_layer_matches_torch(torch, nn.GELU(approximate), torch.nn.GELU(approximate), [normal(4, 6) * 2])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_any_axis(dim):
    torch = require("torch")
    assert_layer_matches_torch(torch, nn.Softmax(dim), torch.nn.Softmax(dim), [normal(3, 4, 5)])


def test_flatten():
    torch = require("torch")
    assert_layer_matches_torch(torch, nn.Flatten(), torch.nn.Flatten(), [normal(2, 3, 4, 2)])


def test_dropout_is_identity_in_eval_mode_and_traces_nothing():
    torch = require("torch")
    module = nn.Dropout(0.5).eval()
    assert_layer_matches_torch(torch, module, torch.nn.Dropout(0.5).eval(), [normal(3, 4)])
    graph = kiln.trace(module, kiln.TensorSpec((3, 4)))
    assert not graph.ops


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 3},
        {"kernel_size": (3, 2), "stride": 2, "padding": 1},
        {"kernel_size": 2, "stride": (1, 2), "padding": (0, 1), "dilation": 2, "groups": 2},
        {"kernel_size": 1, "groups": 4, "bias": False},
    ],
)
def test_conv2d(kwargs):
    torch = require("torch")
    kiln.manual_seed(1)
    module, reference = nn.Conv2d(4, 4, **kwargs), torch.nn.Conv2d(4, 4, **kwargs)
    assert_layer_matches_torch(torch, module, reference, [normal(2, 4, 7, 6)])


@pytest.mark.parametrize("kwargs", [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1}, {"kernel_size": (2, 3), "stride": 1}])
@pytest.mark.parametrize("kind", ["MaxPool2d", "AvgPool2d"])
def test_pooling(kind, kwargs):
    torch = require("torch")
    x = RNG.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6).astype(np.float32) / 10  # distinct values: one max per window
    assert_layer_matches_torch(torch, getattr(nn, kind)(**kwargs), getattr(torch.nn, kind)(**kwargs), [x])


def _mha_call(module, x, padding):
    return module(x, x, x, key_padding_mask=padding, need_weights=False)[0]


def test_multihead_attention_with_padding_mask():
    torch = require("torch")
    kiln.manual_seed(2)
    module, reference = nn.MultiheadAttention(8, 2, batch_first=True), torch.nn.MultiheadAttention(8, 2, batch_first=True)
    padding = np.array([[False] * 5, [False, False, False, True, True]])
    assert_layer_matches_torch(torch, module, reference, [normal(2, 5, 8), padding], call=_mha_call)


def test_multihead_attention_causal_cross():
    torch = require("torch")
    kiln.manual_seed(3)
    module, reference = nn.MultiheadAttention(6, 3, batch_first=True), torch.nn.MultiheadAttention(6, 3, batch_first=True)
    causal = np.triu(np.ones((4, 4), dtype=bool), 1)  # True = masked out, PyTorch's convention
    call = lambda m, q, kv, mask: m(q, kv, kv, attn_mask=mask, need_weights=False)[0]  # noqa: E731
    assert_layer_matches_torch(torch, module, reference, [normal(3, 4, 6), normal(3, 4, 6), causal], call=call)


@pytest.mark.parametrize("average", [True, False])
def test_multihead_attention_returns_its_weights_as_torch(average):
    """PyTorch's default ``need_weights=True``: the weights averaged over the heads (or per head), with a padding and an
    attention mask; output and weights both compared, gradients flowing through both."""
    torch = require("torch")
    kiln.manual_seed(6)
    module, reference = nn.MultiheadAttention(8, 2, batch_first=True), torch.nn.MultiheadAttention(8, 2, batch_first=True)
    padding = np.array([[False] * 5, [False, False, False, True, True]])
    causal = np.triu(np.ones((5, 5), dtype=bool), 1)
    call = lambda m, x, pad, mask: _output_and_weights(m(x, x, x, key_padding_mask=pad, attn_mask=mask, average_attn_weights=average))  # noqa: E731
    assert_layer_matches_torch(torch, module, reference, [normal(2, 5, 8), padding, causal], call=call)


def test_sequence_first_layers_match_torch_defaults():
    """PyTorch's default layout, ``(L, N, E)``: attention runs within each sequence, masks stay ``(N, S)``, the weights
    come back batch first; an encoder and a decoder layer built with PyTorch's defaults (no ``batch_first``) too."""
    torch = require("torch")
    kiln.manual_seed(7)
    padding = np.array([[False] * 5, [False, False, False, True, True]])
    call = lambda m, x, pad: _output_and_weights(m(x, x, x, key_padding_mask=pad))  # noqa: E731
    assert_layer_matches_torch(torch, nn.MultiheadAttention(8, 2), torch.nn.MultiheadAttention(8, 2), [normal(5, 2, 8), padding], call=call)
    options = {"dim_feedforward": 16, "dropout": 0.0}
    encoder = lambda m, x, pad: m(x, src_key_padding_mask=pad)  # noqa: E731
    assert_layer_matches_torch(torch, nn.TransformerEncoderLayer(8, 2, **options), torch.nn.TransformerEncoderLayer(8, 2, **options),
                               [normal(5, 2, 8), padding], call=encoder)
    decoder = lambda m, tgt, memory: m(tgt, memory)  # noqa: E731
    assert_layer_matches_torch(torch, nn.TransformerDecoderLayer(8, 2, **options), torch.nn.TransformerDecoderLayer(8, 2, **options),
                               [normal(4, 2, 8), normal(5, 2, 8)], call=decoder)


def _output_and_weights(result):
    """The output and the weights as one ``(N, -1)`` tensor: one comparison and one backward cover both."""
    output, weights = result
    n = output.shape[0]
    cat = __import__("torch").cat if type(output).__module__.startswith("torch") else F.cat
    return cat([output.reshape(n, -1), weights.reshape(n, -1)], 1)


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_encoder_layer(norm_first):
    torch = require("torch")
    kiln.manual_seed(4)
    options = {"dim_feedforward": 16, "dropout": 0.0, "activation": "gelu", "batch_first": True, "norm_first": norm_first}
    module, reference = nn.TransformerEncoderLayer(8, 2, **options), torch.nn.TransformerEncoderLayer(8, 2, **options)
    padding = np.array([[False] * 5, [False] * 3 + [True] * 2])
    call = lambda m, x, mask: m(x, src_key_padding_mask=mask)  # noqa: E731
    assert_layer_matches_torch(torch, module, reference, [normal(2, 5, 8), padding], call=call)


def test_transformer_decoder_layer_pre_norm():
    torch = require("torch")
    kiln.manual_seed(5)
    options = {"dim_feedforward": 12, "dropout": 0.0, "batch_first": True, "norm_first": True}
    module, reference = nn.TransformerDecoderLayer(6, 2, **options), torch.nn.TransformerDecoderLayer(6, 2, **options)
    causal = np.triu(np.ones((4, 4), dtype=bool), 1)
    call = lambda m, tgt, memory, mask: m(tgt, memory, tgt_mask=mask)  # noqa: E731
    assert_layer_matches_torch(torch, module, reference, [normal(2, 4, 6), normal(2, 3, 6), causal], call=call)


def test_train_and_eval_trace_different_graphs():
    model = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True, norm_first=True)
    train_ops = [op.name for op in kiln.trace(model.train(), kiln.TensorSpec((2, 3, 8))).ops]
    eval_ops = [op.name for op in kiln.trace(model.eval(), kiln.TensorSpec((2, 3, 8))).ops]
    # as PyTorch's layer: the attention weights', the feed-forward's, and the two residual branches'
    assert train_ops.count("nn.dropout") == 4 and "nn.dropout" not in eval_ops
    assert "nn.scaled_dot_product_attention" in eval_ops and "nn.scaled_dot_product_attention" not in train_ops


def test_batch_norm2d_training_and_eval_match_torch():
    torch = require("torch")
    module, reference = nn.BatchNorm2d(3, momentum=0.2), torch.nn.BatchNorm2d(3, momentum=0.2)
    module.weight.data[...] = normal(3)
    module.bias.data[...] = normal(3)
    x = normal(4, 3, 5, 2) * 2 + 1
    assert set(module.state_dict()) == set(reference.state_dict())
    assert_layer_matches_torch(torch, module, reference, [x])  # training mode: batch statistics
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in module.state_dict().items()})
    kiln.compile(module)(x)  # a training-mode forward updates the running statistics, as PyTorch's
    reference(torch.tensor(x))
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(module.state_dict()[name], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert_layer_matches_torch(torch, module.eval(), reference.eval(), [x])  # eval mode: running statistics


def test_batch_norm_running_statistics_are_step_outputs():
    torch = require("torch")
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    reference = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3))
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    step = kiln.compile_train_step(model, kiln.nn.functional.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for seed in range(3):
        x, y = normal(6, 1, 4, 4), np.random.default_rng(seed).integers(0, 3, 6)
        loss = step(x, y)
        optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(reference(torch.tensor(x)), torch.tensor(y))
        torch_loss.backward()
        optimizer.step()
        np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-5)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    assert int(model.state_dict()["1.num_batches_tracked"]) == 3
