"""Porting probes, transformer-era scripts (BERT, GPT-2 with a KV cache, LoRA, bfloat16 autocast, T5): what broke.

- ``F.scaled_dot_product_attention`` refused a float ``attn_mask``; Hugging Face's SDPA paths pass the additive
  padding mask ``(1 - attention_mask[:, None, None, :]) * finfo(dtype).min`` there. It is now added to the scores.
- Under ``autocast("cpu", dtype=bfloat16)`` a Linear rounded its product before adding the bias (torch's addmm adds it
  in float32 and rounds once), and attention rounded per op where torch's CPU flash kernel computes in float32: about
  half of a transformer's bfloat16 logits differed from torch's in the last bit. Now they are torch's, bit for bit
  (forward; gradients stay within bfloat16 rounding). A half model outside an autocast region keeps its fused ops.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _both(make_inputs, function):
    """``function(lib, *inputs)`` on torch and kiln, the inputs made from the same arrays (gradients requested)."""
    torch = require_torch()
    arrays = make_inputs(np.random.default_rng(0))
    results = []
    for lib in (torch, kiln):
        inputs = [lib.tensor(a).requires_grad_() if a.dtype.kind == "f" else lib.tensor(a) for a in arrays]
        output = function(lib, *inputs)
        output.float().mul(lib.tensor(np.linspace(-1, 1, output.shape[-1]).astype(np.float32))).sum().backward()
        grads = [np.asarray(t.grad.detach().float().numpy() if hasattr(t.grad, "detach") else t.grad, np.float64) for t in inputs if t.requires_grad]
        results.append((str(output.dtype).split(".")[-1], output.detach().float().numpy().astype(np.float64), grads))
    return results


def _qkv_and_padding(rng):
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))
    attention_mask = np.ones((2, 5), np.int64)
    attention_mask[0, 3:] = 0
    return q, k, v, attention_mask


def _hugging_face_padding_bias(lib, attention_mask, dtype):
    extended = attention_mask[:, None, None, :].to(dtype=dtype)
    return (1.0 - extended) * lib.finfo(dtype).min


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_sdpa_takes_an_additive_float_mask_as_torch(causal, scale):
    def attend(lib, q, k, v, attention_mask):
        bias = _hugging_face_padding_bias(lib, attention_mask, q.dtype)
        return lib.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal, scale=scale)

    (_, theirs, their_grads), (_, ours, our_grads) = _both(_qkv_and_padding, attend)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_sdpa_float_bias_of_every_query_key_pair_as_torch():
    """A full (N, heads, L, S) float bias, as T5's or ALiBi's relative-position bias, in a compiled function too."""
    torch = require_torch()
    rng = np.random.default_rng(1)
    q, k, v, bias = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((2, 3, 4, 6))
    theirs = torch.nn.functional.scaled_dot_product_attention(*(torch.tensor(a) for a in (q, k, v)), attn_mask=torch.tensor(bias))
    attend = kiln.compile(lambda q, k, v, b: kiln.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=b))
    ours = attend(*(kiln.tensor(a) for a in (q, k, v, bias)))
    np.testing.assert_allclose(np.asarray(ours.numpy() if hasattr(ours, "numpy") else ours), theirs.numpy(), rtol=1e-12, atol=1e-14)


def _bfloat16_inputs(rng):
    q, k, v, attention_mask = _qkv_and_padding(rng)
    return q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), attention_mask


@pytest.mark.parametrize("mask", ["none", "causal", "bool", "float", "fully_masked_row"])
def test_sdpa_under_bfloat16_autocast_is_torchs_cpu_kernel_bit_for_bit(mask):
    def attend(lib, q, k, v, attention_mask):
        with lib.autocast("cpu", dtype=lib.bfloat16):
            return _attend_in_region(lib, q, k, v, attention_mask)

    def _attend_in_region(lib, q, k, v, attention_mask):
        keep = attention_mask[:, None, None, :].bool().expand(-1, 3, 5, -1)
        if mask == "fully_masked_row":
            keep = keep & (lib.arange(5)[:, None] != 2)
        masks = {"none": None, "causal": None, "bool": keep, "fully_masked_row": keep,
                 "float": _hugging_face_padding_bias(lib, attention_mask, lib.bfloat16)}
        return lib.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=masks[mask], is_causal=mask == "causal")

    (their_dtype, theirs, _), (our_dtype, ours, our_grads) = _both(_bfloat16_inputs, attend)
    assert (our_dtype, their_dtype) == ("bfloat16", "bfloat16")
    np.testing.assert_array_equal(ours, theirs)
    assert all(np.isfinite(g).all() for g in our_grads)


def test_autocast_bfloat16_linear_adds_its_bias_before_the_one_rounding():
    def linear(lib, x, w, b):
        with lib.autocast("cpu", dtype=lib.bfloat16):
            return lib.nn.functional.linear(x, w, b)

    inputs = lambda rng: (rng.standard_normal((6, 16)).astype(np.float32), rng.standard_normal((8, 16)).astype(np.float32),
                          rng.standard_normal(8).astype(np.float32))
    (_, theirs, their_grads), (_, ours, our_grads) = _both(inputs, linear)
    np.testing.assert_array_equal(ours, theirs)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_array_equal(a, b)


def test_autocast_bfloat16_multihead_attention_block_forward_is_torchs():
    """A pre-norm block (LayerNorm, MultiheadAttention with a causal mask, GELU MLP) on a float32 master model."""
    torch = require_torch()

    def block(lib):
        nn = lib.nn
        lib.manual_seed(0)
        return nn.ModuleDict(dict(ln=nn.LayerNorm(16), attn=nn.MultiheadAttention(16, 2, batch_first=True),
                                  ff=nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))))

    def forward(lib, m, x):
        h = m["ln"](x)
        mask = lib.triu(lib.ones(6, 6, dtype=lib.bool), diagonal=1)
        with lib.autocast("cpu", dtype=lib.bfloat16):
            a, _ = m["attn"](h, h, h, attn_mask=mask, need_weights=False)
            return m["ff"](x + a)

    theirs_model, ours_model = block(torch), block(kiln)
    ours_model.load_state_dict({k: kiln.tensor(v.detach().numpy()) for k, v in theirs_model.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((3, 6, 16)).astype(np.float32)
    theirs = forward(torch, theirs_model, torch.tensor(x)).float().detach().numpy()
    ours = forward(kiln, ours_model, kiln.tensor(x))
    assert ours.dtype == kiln.bfloat16
    np.testing.assert_array_equal(ours.float().detach().numpy(), theirs)


def test_sdpa_query_that_may_attend_nothing_gets_zero_as_torch():
    """HF's SDPA padding mask over queries and keys, ``mask[:, None, :, None] & mask[:, None, None, :]``: the padded
    queries' rows are all False; torch 2.13 returns 0 there (the fused op averaged every value)."""
    def attend(lib, q, k, v, attention_mask):
        keep = attention_mask.bool()
        return lib.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, :, None] & keep[:, None, None, :])

    (_, theirs, their_grads), (_, ours, our_grads) = _both(_qkv_and_padding, attend)
    assert not theirs[0, :, 3:].any()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_grouped_query_attention_as_torch(causal):
    """``enable_gqa=True`` (Llama-style scripts): 4 query heads share 2 key/value heads."""
    inputs = lambda rng: (rng.standard_normal((2, 4, 5, 3)), rng.standard_normal((2, 2, 5, 3)), rng.standard_normal((2, 2, 5, 3)))
    attend = lambda lib, q, k, v: lib.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    (_, theirs, their_grads), (_, ours, our_grads) = _both(inputs, attend)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_sdpa_grouped_query_attention_refuses_heads_that_do_not_divide():
    q, k = kiln.tensor(np.zeros((1, 3, 2, 4))), kiln.tensor(np.zeros((1, 2, 2, 4)))
    with pytest.raises(kiln.KilnError, match="query has 3 heads, key 2 and value 2"):
        kiln.nn.functional.scaled_dot_product_attention(q, k, k, enable_gqa=True)


def _bfloat16_attention(lib, backends):
    q, k, v = (lib.tensor(a) for a in _bfloat16_inputs(np.random.default_rng(3))[:3])
    with lib.autocast("cpu", dtype=lib.bfloat16), lib.nn.attention.sdpa_kernel(backends):
        return lib.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).float().numpy()


def test_sdpa_kernel_math_under_autocast_computes_as_torchs_math_path():
    """``sdpa_kernel(SDPBackend.MATH)`` (torch.nn.attention) keeps torch off its flash kernel: float32 throughout, one
    rounding; the default allows flash, whose unnormalised bfloat16 weights round differently."""
    torch = require_torch()
    ours, theirs = (_bfloat16_attention(lib, [lib.nn.attention.SDPBackend.MATH]) for lib in (kiln, torch))
    np.testing.assert_allclose(ours, theirs, rtol=2 ** -8, atol=1e-6)  # one bfloat16 ulp: torch scales q and k by sqrt(scale)
    flash = _bfloat16_attention(kiln, [kiln.nn.attention.SDPBackend.FLASH_ATTENTION, kiln.nn.attention.SDPBackend.MATH])
    np.testing.assert_array_equal(flash, _bfloat16_attention(torch, [torch.nn.attention.SDPBackend.FLASH_ATTENTION]))
    assert (flash != ours).any()


def test_sdpa_kernel_refuses_a_set_with_no_cpu_kernel():
    with pytest.raises(kiln.KilnError, match="allow SDPBackend.MATH or SDPBackend.FLASH_ATTENTION"):
        with kiln.nn.attention.sdpa_kernel(kiln.nn.attention.SDPBackend.EFFICIENT_ATTENTION):
            pass
    assert kiln.backends.cuda.flash_sdp_enabled() and kiln.backends.cuda.math_sdp_enabled()


def test_backends_cuda_matmul_allow_tf32_is_the_float32_matmul_precision():
    """nanoGPT's ``torch.backends.cuda.matmul.allow_tf32 = True`` (it raised AttributeError)."""
    saved = kiln.get_float32_matmul_precision()
    try:
        kiln.backends.cuda.matmul.allow_tf32 = True
        assert kiln.get_float32_matmul_precision() == "high" and kiln.backends.cuda.matmul.allow_tf32
        kiln.backends.cuda.matmul.allow_tf32 = False
        assert kiln.get_float32_matmul_precision() == "highest" and not kiln.backends.cuda.matmul.allow_tf32
    finally:
        kiln.set_float32_matmul_precision(saved)


@pytest.mark.parametrize("rank", [1, 2])
def test_autocast_bfloat16_convolution_adds_its_bias_before_the_one_rounding(rank):
    def convolve(lib, x, w, b):
        with lib.autocast("cpu", dtype=lib.bfloat16):
            return getattr(lib.nn.functional, f"conv{rank}d")(x, w, b, padding=1)

    spatial = (6,) * rank
    inputs = lambda rng: (rng.standard_normal((2, 3, *spatial)).astype(np.float32), rng.standard_normal((4, 3, *(3,) * rank)).astype(np.float32),
                          rng.standard_normal(4).astype(np.float32))
    (_, theirs, their_grads), (_, ours, our_grads) = _both(inputs, convolve)
    np.testing.assert_array_equal(ours, theirs)
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, rtol=0, atol=2 ** -7 * np.abs(b).max())  # bfloat16 backward kernels: rounding apart
