"""Porting probe: a LLaMA-style decoder (``e2e/llama_program.py``: Meta's ``llama/model.py`` with lit-llama's training
path) run once in each library from kiln's initial weights.

- RMSNorm ``x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)`` on ``x.float()``, ``.type_as(x)``, times weight.
- Rotary embeddings the reference way: ``precompute_freqs_cis`` by ``torch.polar(torch.ones_like(freqs), freqs)``,
  ``torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))``, a broadcast complex product,
  ``torch.view_as_real(...).flatten(3)``, ``.type_as(x)``.
- SwiGLU ``w2(F.silu(w1(x)) * w3(x))``; grouped-query attention by ``repeat_kv`` (``x[:, :, :, None, :].expand(...)
  .reshape(...)``) and ``F.scaled_dot_product_attention(is_causal=True)``; tied or untied output head.
- AdamW with nanoGPT's weight-decay groups (2-D weights decay, norms do not), warmup + cosine ``LambdaLR``,
  ``clip_grad_norm_``; eagerly and with the whole step (zero_grad, forward, backward, clip, step) one
  ``kiln.compile(fullgraph=True)`` graph, the scheduler stepped between calls.
- Meta's greedy ``generate``: a KV cache written in place (``self.cache_k[:bsz, start_pos:start_pos + seqlen] = xk``)
  under ``torch.inference_mode()``, the prefill's ``triu``/``hstack`` mask as ``attn_mask``, ``torch.where`` keeping
  the prompt, ``eos_reached |= ...``.

Checked against torch 2.13 in float64 to 1e-10 with the reference's float32 islands dropped (``upcast=False``, the
only change to its text); with them (the reference text exactly) in float64 and in float32 at float32's level
(rtol 2e-5; the float32 run's weights after AdamW at atol 1e-5, see the test). The generation's step logits over the
cache are also the cache-free forward's, to 1e-10.

What broke: ``self.freqs_cis.to(h.device)`` on the complex ``freqs_cis`` read the device as a dtype and raised (fixed:
``tests/frontend/test_complex_to_vs_torch.py``). Under bfloat16 autocast, SiLU rounded twice and its gradient at
every step, and the gradient of RMSNorm's broadcast scale summed unrounded products (both torch's to the bit now:
``tests/half/test_silu_rounding_vs_torch.py``, ``test_half_broadcast_gradients_vs_torch.py``); SDPA's bfloat16 backward
still differs by an ulp or two. Everything else agreed as first written.
Not covered (kiln gaps, left out rather than skipped): gpt-fast's compiled decoding (``kiln.compile`` of the forward
that writes the cache in place: a closure/attribute tensor written by ``cache[:, a:b] = x`` inside a compiled function
fails at the call, ``self.cache = self.cache.to(x)`` then the write fails in the pass manager's ``clone_graph``; a
symbolic-length slice ``start_pos:start_pos + seqlen`` falls back to a static trace); ``Tensor.is_inference()``
(kiln has no inference tensors, so it does not refuse to save one for backward as torch does).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import kiln
from e2e.llama_program import ModelArgs, TrainConfig, configure_optimizers, cosine_with_warmup, generate, llama, loss_of
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from ops.op_table import _cross_entropy as numpy_cross_entropy
from oracles import require_torch

BATCH, SEQ, STEPS = 2, 6, 4
FLOAT32_LEVEL = dict(rtol=2e-5, atol=2e-6)


def _tokens(args: ModelArgs, steps=STEPS, seed=0):
    """Sequences counting up from a random start (mod the vocabulary): a pattern a few steps learn."""
    starts = np.random.default_rng(seed).integers(0, args.vocab_size, (steps, BATCH, 1))
    return (starts + np.arange(SEQ + 1)) % args.vocab_size


def train_llama(args: ModelArgs, config: TrainConfig = TrainConfig(), steps=STEPS, compiled=False):
    data = _tokens(args, steps)

    def train(torch, nn, F, model):
        optimizer = configure_optimizers(torch, model, config)
        scheduler = cosine_with_warmup(torch, optimizer, config)
        record = {"losses": [], "norms": [], "lrs": []}

        def step(x, y):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(F, model, x, y)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            return loss.detach(), norm

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for it in range(steps):
            x, y = torch.tensor(data[it, :, :-1]), torch.tensor(data[it, :, 1:])  # nanoGPT's get_batch
            if it == 0:
                logits = model(x)
                record["logits"] = array(logits)
                record["logits_dtype"] = str(logits.dtype).split(".")[-1]
            loss, norm = run(x, y)
            if it == 0 and not compiled:
                record["grads"] = gradients(model)
            scheduler.step()
            record["losses"].append(loss.item())
            record["norms"].append(norm.item())
            record["lrs"].append([group["lr"] for group in optimizer.param_groups])
        record["state"] = snapshot(model)
        return record

    return train


def _lockstep(args: ModelArgs, **options):
    """The two records, having checked that the logits came out in the same dtype."""
    ours, theirs = run_in_lockstep(lambda torch, nn, F: llama(torch, nn, F, args), train_llama(args, **options))
    assert ours.pop("logits_dtype") == theirs.pop("logits_dtype")
    return ours, theirs


FLOAT64 = ModelArgs(upcast=False)
VARIANTS = {"gqa, untied": FLOAT64, "gqa, tied": replace(FLOAT64, tie_embeddings=True),
            "mha, tied": replace(FLOAT64, n_kv_heads=None, tie_embeddings=True),
            "mqa": replace(FLOAT64, n_kv_heads=1)}


@pytest.mark.parametrize("variant", ["gqa, untied", "mha, tied", "mqa"])
def test_llama_trains_as_torch(variant, float64_default):
    ours, theirs = _lockstep(VARIANTS[variant])
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]
    assert max(theirs["norms"]) > TrainConfig().grad_clip  # the clipping clips


@pytest.mark.parametrize("variant", ["gqa, untied", "gqa, tied"])
def test_llama_compiled_step_as_torch(variant, float64_default):
    ours, theirs = _lockstep(VARIANTS[variant], compiled=True)
    assert_same_records(ours, theirs)


def test_llama_reference_float32_islands_in_float64_as_torch(float64_default):
    """The reference text exactly: float64 activations, RMSNorm and rotations in float32 (complex64), logits float32."""
    ours, theirs = _lockstep(ModelArgs())
    assert ours["logits"].dtype == np.float32
    # AdamW's step is lr * m / sqrt(v): the float32 islands' rounding of a gradient (~1e-4 of it) moves a weight by
    # ~lr * 1e-4 = 3e-6 a step, whatever its size (measured on an AVX-512 Xeon: w3 2.6e-6 apart after 4 steps)
    assert_same_records(ours, theirs, **FLOAT32_LEVEL, looser={"state": dict(rtol=2e-5, atol=1e-5)})


def test_llama_compiled_step_float32_as_torch():
    """The reference text in float32 (complex64 rotations) as one compiled step, against torch's eager loop."""
    require_torch()
    ours, theirs = _lockstep(ModelArgs(), compiled=True)
    assert_same_records(ours, theirs, **FLOAT32_LEVEL, looser={"state": dict(rtol=2e-5, atol=1e-5)})


def test_llama_float32_as_torch():
    require_torch()
    ours, theirs = _lockstep(ModelArgs(tie_embeddings=True))
    assert ours["logits"].dtype == np.float32
    # AdamW divides by sqrt(v): a gradient entry that cancels to ~4e-6 (of entries ~4e-4) differs in its 3rd digit
    # between float32 summation orders, and its update moves the weight by ~6e-6 (lr 3e-2); the gradients agree.
    assert_same_records(ours, theirs, **FLOAT32_LEVEL, looser={"state": dict(rtol=2e-5, atol=1e-5)})


def test_llama_bfloat16_autocast_as_torch():
    """LLaMA's usual mixed precision: the forward under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (float32
    weights, the reference's float32 islands). Logits agree to the bit; the float32 weights' gradients within
    2 bfloat16 ulps of the largest (SDPA's bfloat16 backward rounds differently from torch's CPU kernel, and the
    difference spreads to every weight before it; SiLU and broadcast gradients were made torch's to the bit). The loss,
    a float32 mean over the 12 rows of those logits, rounds by the order of its sums: on an AVX-512 Xeon torch's is
    0.7 ulp from the float64 cross-entropy of the same logits, kiln's 0.3, one ulp apart; kiln's within 1 ulp of it."""
    require_torch()
    args = ModelArgs()
    tokens = _tokens(args, steps=1)[0]
    x, y = tokens[:, :-1], tokens[:, 1:]

    def train(torch, nn, F, model):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            logits = model(torch.tensor(x))
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), torch.tensor(y).reshape(-1))
        loss.backward()
        return {"logits": array(logits), "loss": loss.item(), "grads": gradients(model)}

    ours, theirs = run_in_lockstep(lambda torch, nn, F: llama(torch, nn, F, args), train)
    assert ours["logits"].dtype == np.float32
    assert_same_records(ours["logits"], theirs["logits"], rtol=0, atol=0)
    exact = numpy_cross_entropy(theirs["logits"].astype(np.float64).reshape(y.size, -1), y.reshape(-1), reduction="mean")
    ulp = float(np.spacing(np.float32(exact)))
    assert abs(ours["loss"] - exact) <= ulp and abs(ours["loss"] - theirs["loss"]) <= 2 * ulp, (ours["loss"], theirs["loss"], exact)
    for name, grad in theirs["grads"].items():
        assert np.abs(ours["grads"][name] - grad).max() <= 2 * 2.0 ** -8 * np.abs(grad).max(), name


PROMPTS = [[1, 2, 3, 4], [7, 8]]


def train_then_generate(args: ModelArgs, max_gen_len=5):
    """A few eager steps (so that the argmax is decided by the weights, not by rounding), then Meta's ``generate``
    over the KV cache, and the same continuations' logits from one cache-free forward."""
    train = train_llama(args)

    def run(torch, nn, F, model):
        record = train(torch, nn, F, model)
        model.eval()
        model.setup_caches(args.max_batch_size, args.max_seq_len)
        tokens, step_logits = generate(torch, model, PROMPTS, max_gen_len)
        record["tokens"], record["step_logits"] = array(tokens), [array(t) for t in step_logits]
        for layer in model.layers:
            layer.attention.cache_k = layer.attention.cache_v = None
        with torch.no_grad():
            record["uncached_logits"] = array(model(tokens[:1, :-1]))
        return record

    return run


@pytest.mark.parametrize("variant", ["gqa, tied"])
def test_llama_greedy_generation_with_kv_cache_as_torch(variant, float64_default):
    args = VARIANTS[variant]
    ours, theirs = run_in_lockstep(lambda torch, nn, F: llama(torch, nn, F, args), train_then_generate(args))
    assert ours.pop("logits_dtype") == theirs.pop("logits_dtype")
    assert_same_records(ours, theirs)
    assert all(list(row[:len(prompt)]) == prompt for row, prompt in zip(theirs["tokens"], PROMPTS))
    first = min(map(len, PROMPTS))  # step i's logits (over the cache) are the cache-free forward's at first - 1 + i
    np.testing.assert_allclose(np.stack(ours["step_logits"])[:, 0], ours["uncached_logits"][0, first - 1:],
                               rtol=1e-10, atol=1e-12)
