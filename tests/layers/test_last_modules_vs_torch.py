"""The last of torch.nn: AdaptiveLogSoftmaxWithLoss, FractionalMaxPool2d/3d, CrossMapLRN2d, F.multi_head_attention_forward
and F.native_channel_shuffle against PyTorch in float64 (values, indices, input and parameter gradients, state_dict
loading, reprs, errors)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import KilnError
from kiln.frontend.tensor import Tensor
from layer_parity import assert_layer_matches_torch, kiln_outputs_and_grads, normal, randomize
from oracles import require

EXACT = dict(rtol=1e-10, atol=1e-12)


def _samples(*shape, seed=1):
    return np.random.default_rng(seed).random(shape)


# Fractional max pooling ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel, size, ratio", [(3, (4, 5), None), ((2, 3), None, (0.5, 0.6)), (2, (1, 7), None), (3, 7, None)])
def test_fractional_max_pool2d_matches_torch_given_the_samples(kernel, size, ratio):
    torch = require("torch")
    x, u = normal(2, 3, 9, 11, dtype="float64"), _samples(2, 3, 2)
    module = nn.FractionalMaxPool2d(kernel, output_size=size, output_ratio=ratio, _random_samples=u)
    reference = torch.nn.FractionalMaxPool2d(kernel, output_size=size, output_ratio=ratio, _random_samples=torch.tensor(u))
    assert repr(module) == repr(reference) and set(module.state_dict()) == set(reference.state_dict()) == {"_random_samples"}
    assert_layer_matches_torch(torch, module, reference, [x], **EXACT)


def test_fractional_max_pool_indices_match_torch_and_unbatched_inputs_work():
    torch = require("torch")
    x, u = normal(2, 3, 9, 11, dtype="float64"), _samples(2, 3, 2)
    call = lambda _m, t: F.fractional_max_pool2d(t, (2, 3), output_ratio=(0.5, 0.6), return_indices=True, _random_samples=u)[1].to("float64")
    indices = kiln_outputs_and_grads(nn.Module(), call, [x], np.ones((2, 3, 4, 6)))[0]
    expected = torch.nn.functional.fractional_max_pool2d_with_indices(torch.tensor(x), (2, 3), output_ratio=(0.5, 0.6),
                                                                      _random_samples=torch.tensor(u))[1]
    np.testing.assert_array_equal(indices, expected.numpy())
    unbatched = lambda m, t: m(t)
    assert_layer_matches_torch(torch, nn.FractionalMaxPool2d(2, 4, _random_samples=u[:1]),
                               torch.nn.FractionalMaxPool2d(2, 4, _random_samples=torch.tensor(u[:1])), [x[0]], unbatched, **EXACT)


def test_fractional_max_pool3d_matches_torch_values_gradients_and_indices():
    torch = require("torch")
    x, u = normal(2, 2, 7, 8, 9, dtype="float64"), _samples(2, 2, 3)
    module = nn.FractionalMaxPool3d((2, 3, 2), output_size=(3, 4, 5), return_indices=True, _random_samples=u)
    reference = torch.nn.FractionalMaxPool3d((2, 3, 2), output_size=(3, 4, 5), return_indices=True, _random_samples=torch.tensor(u))
    assert_layer_matches_torch(torch, module, reference, [x], lambda m, t: m(t)[0], **EXACT)
    indices = kiln_outputs_and_grads(module, lambda m, t: m(t)[1].to("float64"), [x], np.ones((2, 2, 3, 4, 5)))[0]
    np.testing.assert_array_equal(indices, reference(torch.tensor(x))[1].numpy())


def test_fractional_max_pool_draws_its_windows_from_the_seed():
    x = normal(4, 3, 12, 12, dtype="float64")
    pool = kiln.compile(nn.FractionalMaxPool2d(2, output_size=7, return_indices=True), seed=0)
    (first, first_indices), (second, second_indices) = pool(x), pool(x)
    assert first.shape == (4, 3, 7, 7) and first_indices.dtype == np.int64 and not np.array_equal(first_indices, second_indices)
    flat = x.reshape(4, 3, -1)
    np.testing.assert_array_equal(first, np.take_along_axis(flat, first_indices.reshape(4, 3, -1), -1).reshape(first.shape))
    rows, cols = first_indices // 12, first_indices % 12
    alpha = (12 - 2) / (7 - 1)
    nominal = np.floor(np.arange(7) * alpha)[:, None]
    nominal[-1] = 10  # the last window ends at the border
    for positions in (rows, np.swapaxes(cols, 2, 3)):  # start_i = int((i + u) a) - int(u a) is floor(i a) or one more
        assert ((positions - nominal >= 0) & (positions - nominal <= 2)).all()


def test_fractional_max_pool_errors():
    with pytest.raises(ValueError, match="either an output size, or a pooling ratio"):
        nn.FractionalMaxPool2d(2)
    with pytest.raises(ValueError, match="only one of"):
        nn.FractionalMaxPool2d(2, output_size=3, output_ratio=0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.FractionalMaxPool3d(2, output_ratio=1.5)
    with pytest.raises(KilnError, match="too large"):
        kiln.compile(lambda t: F.fractional_max_pool2d(t, 4, output_size=6, _random_samples=_samples(1, 1, 2)))(normal(1, 1, 8, 8))
    with pytest.raises(KilnError, match="either an output_size or an output_ratio"):
        kiln.compile(lambda t: F.fractional_max_pool2d(t, 2))(normal(1, 1, 8, 8))
    with pytest.raises(KilnError, match="_random_samples must be"):
        kiln.compile(lambda t: F.fractional_max_pool2d(t, 2, 3, _random_samples=_samples(1, 2, 2)))(normal(1, 1, 8, 8))


# Adaptive log-softmax ------------------------------------------------------------------------------------------------


def _adaptive(torch, head_bias=True):
    module = randomize(nn.AdaptiveLogSoftmaxWithLoss(16, 20, [5, 9, 14], div_value=2.0, head_bias=head_bias, dtype="float64"))
    reference = torch.nn.AdaptiveLogSoftmaxWithLoss(16, 20, [5, 9, 14], div_value=2.0, head_bias=head_bias).double()
    return module, reference


@pytest.mark.parametrize("head_bias", [True, False])
def test_adaptive_log_softmax_output_and_loss_match_torch(head_bias):
    torch = require("torch")
    module, reference = _adaptive(torch, head_bias)
    assert repr(module) == repr(reference)
    x, target = normal(12, 16, dtype="float64"), np.array([0, 4, 5, 8, 9, 13, 14, 19, 2, 11, 17, 6])
    for pick in (lambda out: out.output, lambda out: out.loss.reshape(1)):
        assert_layer_matches_torch(torch, module, reference, [x, target], lambda m, a, b: pick(m(a, b)), **EXACT)


def test_adaptive_log_softmax_log_prob_predict_and_unbatched_input():
    torch = require("torch")
    module, reference = _adaptive(torch)
    x = normal(7, 16, dtype="float64", seed=3)
    assert_layer_matches_torch(torch, module, reference, [x], lambda m, a: m.log_prob(a), **EXACT)
    predicted = kiln.compile(lambda a: module.predict(a))(x)
    np.testing.assert_array_equal(predicted, reference.predict(torch.tensor(x)).numpy())
    single = kiln.compile(lambda a, t: module(a, t), batch_dim=None)(x[0], np.array(13))
    expected = reference(torch.tensor(x[0]), torch.tensor(13))
    np.testing.assert_allclose(single[0], expected.output.detach().numpy(), **EXACT)
    np.testing.assert_allclose(single[1], expected.loss.detach().numpy(), **EXACT)


def test_adaptive_log_softmax_errors():
    for cutoffs in ([], [5, 3], [0, 4], [4, 20], [4, 4]):
        with pytest.raises(ValueError, match="cutoffs should be"):
            nn.AdaptiveLogSoftmaxWithLoss(8, 20, cutoffs)
    module = nn.AdaptiveLogSoftmaxWithLoss(8, 20, [4])
    with pytest.raises(KilnError, match="same size in the batch"):
        kiln.compile(lambda a, t: module(a, t).loss, batch_dim=None)(normal(3, 8), np.array([1, 2]))
    with pytest.raises(KilnError, match="multi-target not supported"):
        kiln.compile(lambda a, t: module(a, t).loss, batch_dim=None)(normal(3, 8), np.zeros((3, 2), np.int64))


# CrossMapLRN2d --------------------------------------------------------------------------------------------------------


def _torch_cross_map_lrn(torch, x, size, alpha, beta, k):
    """PyTorch's forward values, written with autograd ops: its hand-written backward is not its forward's derivative."""
    squares, pre, channels = x * x, int((size - 1) / 2 + 1), x.shape[1]
    scales = []
    for c in range(channels):
        window = squares[:, max(0, c - pre + 1): min(channels, c + pre)].sum(1)
        scales.append(window + squares[:, 0] if c >= pre else window)
    return x * (torch.stack(scales, 1) * (alpha / size) + k) ** -beta


@pytest.mark.parametrize("size, channels", [(5, 8), (3, 6), (4, 7), (2, 5), (5, 3), (1, 4)])
def test_cross_map_lrn2d_matches_torch_values_and_its_exact_gradient(size, channels):
    torch = require("torch")
    x = normal(2, channels, 3, 4, dtype="float64")
    module, reference = nn.CrossMapLRN2d(size, 0.5, 0.75, 1.5), torch.nn.CrossMapLRN2d(size, 0.5, 0.75, 1.5)
    assert repr(module) == repr(reference) == f"CrossMapLRN2d({size}, alpha=0.5, beta=0.75, k=1.5)"
    np.testing.assert_allclose(kiln.compile(module)(x), reference(torch.tensor(x)).numpy(), **EXACT)
    formula = type("Formula", (torch.nn.Module,), {"forward": lambda self, t: _torch_cross_map_lrn(torch, t, size, 0.5, 0.75, 1.5)})()
    assert_layer_matches_torch(torch, module, formula, [x], **EXACT)


def test_cross_map_lrn2d_needs_a_4d_input():
    with pytest.raises(KilnError, match="Expected input to be 4D"):
        kiln.compile(nn.CrossMapLRN2d(3))(normal(2, 3, 4))


# multi_head_attention_forward -----------------------------------------------------------------------------------------


class _Attention(nn.Module):
    """MultiheadAttention's parameters (PyTorch's names), called through ``F.multi_head_attention_forward``."""

    def __init__(self, embed, heads, bias_kv=False, **options):
        super().__init__()
        self.inner = nn.MultiheadAttention(embed, heads, dtype="float64")
        if bias_kv:
            self.bias_k, self.bias_v = nn.Parameter(normal(1, 1, embed, dtype="float64")), nn.Parameter(normal(1, 1, embed, dtype="float64", seed=4))
        self.heads, self.bias_kv, self.options = heads, bias_kv, options

    def forward(self, q, k, v, functional=F):
        inner = self.inner
        bias_k, bias_v = (self.bias_k, self.bias_v) if self.bias_kv else (None, None)
        return functional.multi_head_attention_forward(
            q, k, v, q.shape[-1], self.heads, inner.in_proj_weight, inner.in_proj_bias, bias_k, bias_v, self.options.get("zero", False),
            0.0, inner.out_proj.weight, inner.out_proj.bias, key_padding_mask=self.options.get("padding"),
            attn_mask=self.options.get("mask"), average_attn_weights=self.options.get("average", True))


def _torch_attention(torch, embed, heads, bias_kv=False, **options):
    reference = torch.nn.Module()
    reference.inner = torch.nn.MultiheadAttention(embed, heads).double()
    if bias_kv:
        reference.bias_k, reference.bias_v = (torch.nn.Parameter(torch.zeros(1, 1, embed, dtype=torch.float64)) for _ in range(2))
    reference.forward = lambda q, k, v: _Attention.forward(
        type("S", (), {"inner": reference.inner, "heads": heads, "bias_kv": bias_kv, "options": options,
                       "bias_k": getattr(reference, "bias_k", None), "bias_v": getattr(reference, "bias_v", None)})(),
        q, k, v, functional=torch.nn.functional)
    return reference


def _output_and_weights(pair):
    """Both results of attention as one flat tensor (PyTorch's or kiln's), so every gradient flows into one check."""
    output, weights = pair
    concatenate = F.cat if isinstance(output, Tensor) else require("torch").cat
    return concatenate([output.reshape(-1), weights.reshape(-1)], 0)


@pytest.mark.parametrize("options", [
    {}, {"bias_kv": True}, {"zero": True, "average": False}, {"bias_kv": True, "zero": True},
    {"padding": np.array([[False, False, True, False, True], [False] * 5])}, {"mask": np.triu(np.ones((3, 5), bool), 1)},
])
def test_multi_head_attention_forward_matches_torch(options):
    torch = require("torch")
    options = dict(options)
    bias_kv = options.pop("bias_kv", False)
    padding_torch = {k: torch.tensor(v) for k, v in options.items() if k in ("padding", "mask")}
    module = randomize(_Attention(8, 2, bias_kv, **options))
    reference = _torch_attention(torch, 8, 2, bias_kv, **{**options, **padding_torch})
    q, k, v = normal(3, 2, 8, dtype="float64"), normal(5, 2, 8, dtype="float64", seed=1), normal(5, 2, 8, dtype="float64", seed=2)
    assert_layer_matches_torch(torch, module, reference, [q, k, v], lambda m, *xs: _output_and_weights(m(*xs)), **EXACT)


def test_multi_head_attention_forward_unbatched_and_errors():
    torch = require("torch")
    module, reference = randomize(_Attention(8, 4)), _torch_attention(torch, 8, 4)
    q, kv = normal(3, 8, dtype="float64"), normal(6, 8, dtype="float64", seed=1)
    assert_layer_matches_torch(torch, module, reference, [q, kv, kv], lambda m, *xs: _output_and_weights(m(*xs)), **EXACT)
    inner = module.inner
    args = lambda q, heads=4, check=8: (q, q, q, check, heads, inner.in_proj_weight, inner.in_proj_bias, None, None, False, 0.0,
                                        inner.out_proj.weight, inner.out_proj.bias)
    for bad, message in [(dict(check=6), "expecting embedding dimension of 6"), (dict(heads=3), "not divisible by num_heads")]:
        with pytest.raises(KilnError, match=message):
            kiln.compile(lambda t: F.multi_head_attention_forward(*args(t, **bad))[0])(normal(3, 2, 8, dtype="float64"))
    with pytest.raises(KilnError, match="Need attn_mask"):
        kiln.compile(lambda t: F.multi_head_attention_forward(*args(t), is_causal=True)[0])(normal(3, 2, 8, dtype="float64"))


# Channel shuffle ------------------------------------------------------------------------------------------------------


def test_native_channel_shuffle_and_channel_shuffle_match_torch():
    torch = require("torch")
    x = normal(2, 6, 3, 2, dtype="float64")
    for ours, theirs in [(F.native_channel_shuffle, torch.nn.functional.native_channel_shuffle),
                         (F.channel_shuffle, torch.nn.functional.channel_shuffle)]:
        np.testing.assert_array_equal(kiln.compile(lambda t: ours(t, 3))(x), theirs(torch.tensor(x), 3).numpy())
    assert repr(nn.ChannelShuffle(3)) == repr(torch.nn.ChannelShuffle(3))


def test_multi_head_attention_forward_with_separate_projection_weights():
    torch = require("torch")
    q, k, v = normal(3, 2, 8, dtype="float64"), normal(4, 2, 6, dtype="float64", seed=1), normal(4, 2, 5, dtype="float64", seed=2)
    module = randomize(nn.MultiheadAttention(8, 2, dtype="float64"))
    reference = torch.nn.MultiheadAttention(8, 2, kdim=6, vdim=5).double()
    weights = {name: normal(*shape, dtype="float64", seed=i) for i, (name, shape) in
               enumerate([("q_proj_weight", (8, 8)), ("k_proj_weight", (8, 6)), ("v_proj_weight", (8, 5))])}
    for name, array in weights.items():
        setattr(module, name, nn.Parameter(array))
    reference.load_state_dict({**{n: torch.tensor(a) for n, a in weights.items()},
                               **{n: torch.tensor(np.array(a)) for n, a in module.state_dict().items() if n != "in_proj_weight"}})

    def call(m, q, k, v, functional=F):
        return _output_and_weights(functional.multi_head_attention_forward(
            q, k, v, 8, 2, None, m.in_proj_bias, None, None, False, 0.0, m.out_proj.weight, m.out_proj.bias,
            use_separate_proj_weight=True, q_proj_weight=m.q_proj_weight, k_proj_weight=m.k_proj_weight, v_proj_weight=m.v_proj_weight))

    probe = call(reference, *(torch.tensor(a) for a in (q, k, v)), functional=torch.nn.functional)
    output = kiln_outputs_and_grads(module, call, [q, k, v], np.ones(probe.shape))[0]
    np.testing.assert_allclose(output, probe.detach().numpy(), **EXACT)


def test_fractional_max_pool2d_float32_windows_match_torch():
    torch = require("torch")
    x, u = normal(3, 4, 17, 13), _samples(3, 4, 2).astype("float32")
    pooled = kiln.compile(lambda t: F.fractional_max_pool2d(t, (3, 2), (7, 9), return_indices=True, _random_samples=u), batch_dim=None)(x)
    expected = torch.nn.functional.fractional_max_pool2d(torch.tensor(x), (3, 2), (7, 9), return_indices=True, _random_samples=torch.tensor(u))
    np.testing.assert_array_equal(pooled[0], expected[0].numpy())
    np.testing.assert_array_equal(pooled[1], expected[1].numpy())


def test_adaptive_log_softmax_loads_a_torch_state_dict():
    torch = require("torch")
    reference = torch.nn.AdaptiveLogSoftmaxWithLoss(16, 20, [5, 9, 14], div_value=2.0).double()
    module = nn.AdaptiveLogSoftmaxWithLoss(16, 20, [5, 9, 14], div_value=2.0, dtype="float64")
    module.load_state_dict({name: value.numpy() for name, value in reference.state_dict().items()})
    x = normal(5, 16, dtype="float64")
    np.testing.assert_allclose(kiln.compile(module.log_prob)(x), reference.log_prob(torch.tensor(x)).detach().numpy(), **EXACT)
