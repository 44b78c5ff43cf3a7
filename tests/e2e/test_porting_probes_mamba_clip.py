"""Porting probe: johnma2006/mamba-minimal's Mamba and mlfoundations/open_clip's contrastive training
(``e2e/mamba_clip_program.py``, written once, ``torch`` being torch or kiln), trained in both libraries from kiln's
initial weights and compared in float64 to 1e-10: losses, gradient norms, learning rates, the first (Mamba) and
last gradients, the parameters and AdamW's state after six steps, generated text, a forward after training;
eagerly and with the step one ``kiln.compile(fullgraph=True)`` graph; float32 at float32's level.

- mamba-minimal's ``model.py`` as written: ``ModelArgs`` (a dataclass whose ``__post_init__`` sets ``d_inner``,
  ``dt_rank = math.ceil(d_model / 16)`` and pads ``vocab_size`` to a multiple of 8), ``Mamba`` (``nn.Embedding``, an
  ``nn.ModuleList`` of ``ResidualBlock``, ``RMSNorm``, ``lm_head.weight = self.embedding.weight`` tied),
  ``ResidualBlock`` (``self.mixer(self.norm(x)) + x``), ``RMSNorm`` (``x * torch.rsqrt(x.pow(2).mean(-1,
  keepdim=True) + self.eps) * self.weight``), ``MambaBlock`` (``x_and_res.split(split_size=[d_inner, d_inner],
  dim=-1)``, the depthwise ``nn.Conv1d(groups=d_inner, padding=d_conv - 1)`` sliced ``[:, :, :l]`` between two
  ``rearrange``s, ``F.silu``, ``A_log = nn.Parameter(torch.log(repeat(torch.arange(1, d_state + 1), 'n -> d n',
  d=d_inner)))`` of an expanded int64 view, ``A = -torch.exp(self.A_log.float())`` and ``D = self.D.float()`` (float32
  under the float64 model), ``x_proj`` split into ``delta, B, C``, ``F.softplus(self.dt_proj(delta))``,
  ``selective_scan``'s ``torch.exp(einsum(delta, A, 'b l d_in, d_in n -> b l d_in n'))``, a three-operand
  ``einsum`` for ``deltaB_u``, ``torch.zeros((b, d_in, n), device=deltaA.device)``, the sequential loop ``x =
  deltaA[:, i] * x + deltaB_u[:, i]`` with ``einsum(x, C[:, i, :], 'b d_in n, b n -> b d_in')``, ``ys.append(y)``,
  ``torch.stack(ys, dim=1)``, ``y + u * D``). The einops calls run through a tiny local helper that maps named axes
  to ``torch.einsum`` letters, ``permute`` and ``reshape(...).expand(...)``, as einops does for these patterns.
- Training (the repository has none): a character token stream, ``F.cross_entropy(logits.view(-1, V), y.view(-1))``,
  nanoGPT's AdamW groups (decay for ``p.dim() >= 2``: the tied embedding once, the conv kernels, ``A_log``; none for
  norms, biases and ``D``), ``clip_grad_norm_`` and transformers' cosine schedule with warmup as a ``LambdaLR``.
- demo.ipynb's ``generate``: ``model.eval()``, ``model(input_ids)[:, -1]`` under ``torch.no_grad()``,
  ``F.softmax``, ``torch.topk``, ``probs[probs < values[:, -1, None]] = 0``, ``probs.sum(axis=1, keepdims=True)``
  (NumPy's keyword names), ``torch.argmax(probs, dim=-1)[:, None]`` or ``torch.multinomial(probs, num_samples=1)``,
  ``torch.cat([input_ids, next_indices], dim=1)`` growing the input, ``output.tolist()`` decoded.
- open_clip: ``transformer.py``'s ``LayerNorm`` subclass (``F.layer_norm(x, self.normalized_shape, ...)``, cast back),
  ``ResidualAttentionBlock`` (pre-norm ``nn.MultiheadAttention(d_model, n_head)`` on LND input with
  ``attn_mask.to(q_x.dtype)`` and ``need_weights=False``, ``nn.Identity`` layer scales, an ``OrderedDict``
  ``nn.Sequential`` MLP with ``nn.GELU``, ``hasattr(self, "ln_1_kv")``), ``Transformer`` (``x.transpose(0, 1)
  .contiguous()``, ``get_cast_dtype``), ``VisionTransformer`` (patch ``nn.Conv2d`` with stride, ``_expand_token``'s
  ``view(1, 1, -1).expand(batch, -1, -1)`` class token, ``positional_embedding.to(x.dtype)``, ``ln_pre``, ``ln_post``,
  ``tok`` pooling, ``pooled @ self.proj``), ``text_global_pool`` (``x[torch.arange(x.shape[0]),
  text.argmax(dim=-1)]`` at the EOT token); ``model.py``'s ``CLIP`` (``build_causal_mask``: ``torch.empty(n, n)``,
  ``fill_(float("-inf"))``, ``triu_(1)``, a non-persistent buffer; ``init_parameters``' ``nn.init.normal_``;
  ``logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))``; ``F.normalize``; ``output_dict``);
  ``loss.py``'s ``ClipLoss`` (``logit_scale * image_features @ text_features.T``, ``torch.arange`` labels cached in a
  dict keyed by ``image_features.device``, the mean of two cross-entropies, ``output_dict``).
- open_clip_train: main.py's AdamW groups (``exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias"
  in n or 'logit_scale' in n``), ``scheduler.py``'s ``cosine_lr`` (``np.cos`` warmup/cosine, ``param_group["lr"]``
  assigned a NumPy float before each step), ``precision.py``'s ``get_autocast`` and ``get_input_dtype``,
  ``train.py``'s ``train_one_epoch``: ``images.to(device=device, dtype=None, non_blocking=True)``, ``with
  autocast():``, ``sum(losses.values())``, ``scaler.scale(total_loss).backward()``, ``scaler.unscale_``,
  ``clip_grad_norm_(..., norm_type=2.0)``, ``scaler.step``, ``scaler.update``, ``with torch.no_grad():
  unwrap_model(model).logit_scale.clamp_(0, math.log(100))``; with ``accum_freq`` 2 the features of each micro-batch
  cached under ``no_grad`` (``model_out.pop``, lists in a dict), then per micro-batch the forward redone,
  ``torch.cat(accumulated[:j] + [model_out[key]] + accumulated[j + 1:])`` and a backward each, one step; the
  cached labels reused by an eager loss after the (compiled) training; ``set_grad_checkpointing()``'s
  ``checkpoint(r, x, None, None, attn_mask)`` under ``not torch.jit.is_scripting()``.

Adaptations: tiny sizes (Mamba: d_model 16, 2 layers, d_state 16, d_conv 4, sequences of 8, batches of 2; CLIP:
width 16, 2 layers a tower, 8x8 images in 4x4 patches, context 6, embed 8, batches of 3). The ``amp`` precision's
autocast and ``GradScaler`` are built with ``enabled=False`` (a CPU run; the code paths are upstream's); logging is
replaced by a history of each step's values; ``train_one_epoch``'s loop body from ``if args.accum_freq == 1:`` (or,
accumulating, from the redone forwards) to the clamp is an inner ``optimization_step`` so that it can be compiled;
it reads the accumulated batches and features from the enclosing function's variables, rebound each window, as the
loop body does (a compiled graph reads them afresh at every call). ``torch.multinomial`` is fed the same
NumPy uniforms in both libraries (inverse CDF). In float64, ``A = -torch.exp(self.A_log.float())`` is a float32
``exp``: kiln's NumPy backend computes it with NumPy's SIMD float32 ``exp``, an ulp off torch's on 4 of the 16 values
``exp(log(1..16))`` (known and left alone, see the hash_nerf probe), so both libraries' ``exp`` of a float32 tensor
is computed in float64 and rounded once for the float64 comparison (``exp64``); the float32 run uses the libraries'
own.

Compiled: the Mamba step (zero_grad, forward with its Python scan loop, cross-entropy, backward, clipping, AdamW) and
open_clip's ``optimization_step`` (both ``accum_freq`` paths, the disabled scaler, the clamp, the checkpointed
blocks) are each one ``kiln.compile(fullgraph=True)`` graph; the schedulers run between calls, as in the eager loop.
Also ``model = kiln.compile(model, fullgraph=True)`` before the eager loops (torch 2.x's ``torch.compile(model)``),
Mamba's generation included.

What broke: ``torch.utils.checkpoint.checkpoint(r, x, None, None, attn_mask)`` without ``use_reentrant`` (open_clip's
grad checkpointing; timm's and older scripts' too) is, in PyTorch 2.13, a warning and then the reentrant checkpoint;
kiln took it as ``use_reentrant=False``: no warning, keywords for the function accepted where PyTorch raises
``ValueError``, and a block whose inputs do not require grad (a frozen tower feeding it) got gradients that PyTorch
gives it none of. Left out, it is now PyTorch's default with PyTorch's warning, for ``checkpoint_sequential`` too
(``frontend/checkpoint.py``; ``tests/frontend/test_checkpoint_default_reentrant_vs_torch.py``). transformer.py's
``def get_cast_dtype(self) -> torch.dtype:`` (the program, as open_clip's modules, does not postpone annotations, so
they are evaluated when the class is built; ``output_tokens: torch.jit.Final[bool]``, ``@torch.jit.ignore`` too)
raised AttributeError: kiln had no ``dtype``, the class of its dtypes; ``kiln.dtype`` is now ``DType``
(``isinstance(kiln.float32, kiln.dtype)``; ``kiln/__init__.py``; ``tests/frontend/test_dtype_class_vs_torch.py``).
The compiled ``optimization_step`` with accumulation trained silently wrong from the third window on (losses up to 15%
off): ``kiln.compile`` read a closure's list or dict through the container it traced with, so the windows' new
``accum_images``/``accum_texts`` lists (rebound each window) and ``accum_features``' new lists (a dict of lists) were
never seen, and every call fed the traced window's batches and features. Items are now read through what holds them
at each call (a path, as ``torch.compile``'s guard sources), nested containers too (``runtime/namespace_reads.py``;
``tests/runtime/test_compiled_rebound_containers_vs_torch.py``). Everything else ran unchanged, eagerly and compiled,
to 1e-10.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import kiln
from e2e.mamba_clip_program import mamba_minimal, mamba_step, mamba_training, open_clip, open_clip_train
from e2e.probe_lockstep import (array, assert_same_records, compiled_module_training, gradients, run_in_lockstep,
                                snapshot, split_key_bias)
from oracles import libraries

STEPS = 6
TEXT = "the cat sat on the mat. the dog ate a log. a cat and a dog. "
CHARS = sorted(set(TEXT))
TOKENS = np.array([CHARS.index(c) for c in TEXT])
FLOAT32 = dict(rtol=2e-5, atol=2e-6)


def feed(monkeypatch, name, make):
    """``lib.<name>`` of both libraries replaced by ``make(lib, rng)``, one NumPy generator a library from one seed."""
    for library in ("kiln", "torch"):
        lib = libraries(library)[0]
        monkeypatch.setattr(lib, name, make(lib, np.random.default_rng(7)))


@pytest.fixture
def exp64(monkeypatch):
    """Both libraries' ``exp`` of a float32 tensor computed in float64 and rounded (see the module docstring)."""
    def rounded_once(lib, rng):
        exp = lib.exp
        return lambda x: exp(x.double()).to(x.dtype) if x.dtype == lib.float32 else exp(x)

    feed(monkeypatch, "exp", rounded_once)


@pytest.fixture
def fed_multinomial(monkeypatch):
    """``torch.multinomial(probs, num_samples=1)`` of both libraries by inverse CDF of the same NumPy uniforms."""
    def inverse_cdf(lib, rng):
        def multinomial(probs, num_samples):
            u = lib.tensor(rng.uniform(size=(probs.shape[0], num_samples)), dtype=probs.dtype)
            cdf = probs.cumsum(-1) / probs.sum(-1, keepdim=True)
            return (cdf[:, None, :] <= u[:, :, None]).sum(-1)

        return multinomial

    feed(monkeypatch, "multinomial", inverse_cdf)


def optimizer_state(optimizer):
    """AdamW's ``state_dict()`` entries by parameter index, as arrays; the groups' learning rates."""
    state = optimizer.state_dict()
    entries = {f"{index}/{key}": np.asarray(value) for index, values in state["state"].items()
               for key, value in values.items()}
    return {"state": entries, "lrs": [float(group["lr"]) for group in state["param_groups"]]}


# --- Mamba ------------------------------------------------------------------------------------------------------


def build_mamba(torch, nn, F):
    ModelArgs, Mamba, _ = mamba_minimal(torch, nn, F)
    return Mamba(ModelArgs(d_model=16, n_layer=2, vocab_size=len(CHARS)))


def token_batches(steps, batch=2, length=8):
    rng = np.random.default_rng(3)
    starts = rng.integers(0, len(TOKENS) - length - 1, (steps, batch))
    return [(np.stack([TOKENS[i:i + length] for i in row]), np.stack([TOKENS[i + 1:i + length + 1] for i in row]))
            for row in starts]


def character_tokenizer(torch):
    class Tokenizer:
        def __call__(self, prompt, return_tensors='pt'):
            return SimpleNamespace(input_ids=torch.tensor([[CHARS.index(c) for c in prompt]]))

        def decode(self, ids):
            return "".join(CHARS[i] if i < len(CHARS) else "?" for i in ids)

    return Tokenizer()


def train_mamba(compiled=False):
    def train(torch, nn, F, model):
        assert model.lm_head.weight is model.embedding.weight
        optimizer, scheduler = mamba_training(torch, nn, F, model)
        step = mamba_step(torch, F, model, optimizer)
        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"groups": [len(group["params"]) for group in optimizer.param_groups], "losses": [], "norms": [],
                  "lrs": []}
        for x, y in token_batches(STEPS):
            loss, norm = run(torch.tensor(x), torch.tensor(y))
            record.setdefault("first_grads", gradients(model))
            scheduler.step()
            record["losses"].append(loss.item())
            record["norms"].append(norm.item())
            record["lrs"].append(optimizer.param_groups[0]["lr"])
        record.update(last_grads=gradients(model), state=snapshot(model), optimizer=optimizer_state(optimizer))
        _, _, generate = mamba_minimal(torch, nn, F)
        tokenizer = character_tokenizer(torch)
        record["greedy"] = generate(model, tokenizer, "the c", n_tokens_to_gen=6, sample=False, top_k=None)
        record["sampled"] = generate(model, tokenizer, "a do", n_tokens_to_gen=6, sample=True, top_k=4)
        with torch.no_grad():
            logits = model(torch.tensor(token_batches(1)[0][0]))
        record.update(logits=array(logits), dtype=str(logits.dtype).split(".")[-1])
        return record

    return train


def check_mamba(ours, theirs, **tolerance):
    for key in ("groups", "greedy", "sampled", "dtype"):
        assert ours.pop(key) == theirs.pop(key), key
    assert_same_records(ours, theirs, **tolerance)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_mamba_trains_and_generates_as_torch(float64_default, exp64, fed_multinomial, compiled):
    ours, theirs = run_in_lockstep(build_mamba, train_mamba(compiled))
    assert theirs["dtype"] == "float64" and theirs["groups"] == [13, 9]
    assert theirs["lrs"][:2] == [1.5e-3, 3e-3]
    check_mamba(ours, theirs)


def test_mamba_float32_trains_and_generates_as_torch(fed_multinomial):
    ours, theirs = run_in_lockstep(build_mamba, train_mamba(compiled=True))
    assert theirs["dtype"] == "float32"
    check_mamba(ours, theirs, **FLOAT32)


# --- open_clip ----------------------------------------------------------------------------------------------------


def build_clip(torch, nn, F):
    CLIPVisionCfg, CLIPTextCfg, CLIP, _ = open_clip(torch, nn, F)
    return CLIP(8, CLIPVisionCfg(layers=2, width=16, head_width=8, patch_size=4, image_size=8),
                CLIPTextCfg(context_length=6, vocab_size=12, width=16, heads=2, layers=2), output_dict=True)


def image_text_batches(count, batch=3):
    """Random images and token rows ``[tokens..., EOT=11, 0...]`` of random lengths."""
    rng = np.random.default_rng(5)
    batches = []
    for _ in range(count):
        texts = np.zeros((batch, 6), np.int64)
        for row in texts:
            n = rng.integers(1, 5)
            row[:n], row[n] = rng.integers(1, 11, n), 11
        batches.append((rng.standard_normal((batch, 3, 8, 8)), texts))
    return batches


def clip_args(accum_freq, precision):
    return SimpleNamespace(accum_freq=accum_freq, precision=precision, device="cpu", lr=5e-3, wd=0.2, beta1=0.9,
                           beta2=0.98, eps=1e-6, grad_clip_norm=1.0, skip_scheduler=False, warmup=2)


def train_clip(accum_freq, precision, compiled=False, grad_checkpointing=False):
    def train(torch, nn, F, model):
        if grad_checkpointing:
            unwrap(model).set_grad_checkpointing(True)
        _, _, _, ClipLoss = open_clip(torch, nn, F)
        cosine_lr, create_optimizer, train_one_epoch = open_clip_train(torch, nn, F)
        args = clip_args(accum_freq, precision)
        optimizer, scaler = create_optimizer(model, args)
        scheduler = cosine_lr(optimizer, args.lr, args.warmup, STEPS)
        data = {"train": [(torch.tensor(images, dtype=torch.get_default_dtype()), torch.tensor(texts))
                          for images, texts in image_text_batches(STEPS * accum_freq)]}
        compile_step = (lambda step: kiln.compile(step, fullgraph=True)) if compiled and torch is kiln else None
        loss = ClipLoss(cache_labels=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = train_one_epoch(model, data, loss, 0, optimizer, scaler, scheduler, args, compile_step)
        record = {"groups": [len(group["params"]) for group in optimizer.param_groups],
                  "steps": {key: [entry[key] for entry in history] for key in history[0]},
                  "last_grads": gradients(model), "state": snapshot(model), "optimizer": optimizer_state(optimizer)}
        images, texts = data["train"][0]
        with torch.no_grad():
            out = model(images, texts)
            record["eval_loss"] = loss(**out).item()  # the labels cached by the training
        record["dtype"] = str(out["image_features"].dtype).split(".")[-1]
        record["warnings"] = sorted({str(w.message) for w in caught if "use_reentrant" in str(w.message)})
        return record

    return train


def unwrap(model):
    """The module under a ``kiln.compile``-d one (as torch's ``_orig_mod``)."""
    return getattr(model, "_orig_mod", model)


def check_clip(ours, theirs, **tolerance):
    for key in ("groups", "dtype", "warnings"):
        assert ours.pop(key) == theirs.pop(key), key
    assert_same_records(ours, theirs, **tolerance)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("accum_freq, precision", [(1, "fp32"), (2, "amp")], ids=["no accumulation", "accum_freq 2"])
def test_open_clip_trains_as_torch(float64_default, accum_freq, precision, compiled):
    ours, theirs = run_in_lockstep(build_clip, train_clip(accum_freq, precision, compiled))
    assert theirs["dtype"] == "float64" and theirs["groups"] == [40, 22]
    check_clip(ours, theirs)


def test_open_clip_float32_trains_as_torch():
    """The key third of each ``in_proj_bias`` has a zero gradient in exact arithmetic (softmax cancels a constant
    added to a query's scores): AdamW (eps 1e-6) turns its float32 rounding noise into steps of up to ~5e-6 a
    library, so it is compared to 2e-5 absolute (``split_key_bias``), the query and value thirds at float32's level."""
    ours, theirs = run_in_lockstep(build_clip, train_clip(1, "fp32", compiled=True))
    assert theirs["dtype"] == "float32"
    check_clip(split_key_bias(ours), split_key_bias(theirs), **FLOAT32,
               looser={"key bias": dict(rtol=0, atol=2e-5)})


def test_open_clip_with_grad_checkpointing_trains_as_torch(float64_default):
    """``set_grad_checkpointing()``: every residual block through ``checkpoint(r, x, None, None, attn_mask)`` (no
    ``use_reentrant``: PyTorch 2.13 warns and takes the reentrant variant, kiln now as well), in the compiled step
    (the blocks' activations recomputed in the backward) with the disabled scaler and no accumulation."""
    ours, theirs = run_in_lockstep(build_clip, train_clip(1, "amp", compiled=True, grad_checkpointing=True))
    assert len(theirs["warnings"]) == 1 and "use_reentrant parameter should be passed" in theirs["warnings"][0]
    check_clip(ours, theirs)


def test_compiled_models_train_as_torch(float64_default, exp64, fed_multinomial):
    """``model = kiln.compile(model, fullgraph=True)`` before the eager loops, as torch 2.x code writes
    ``torch.compile(model)``: open_clip's epoch with accumulation (its ``no_grad`` feature pass and the redone
    forwards are graphs of the compiled CLIP) and Mamba's training and generation (an input growing by a token a
    call)."""
    ours, theirs = run_in_lockstep(build_clip, compiled_module_training(train_clip(2, "amp")))
    check_clip(ours, theirs)
    ours, theirs = run_in_lockstep(build_mamba, compiled_module_training(train_mamba()))
    check_mamba(ours, theirs)
