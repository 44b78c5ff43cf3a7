"""Porting probe: nanoGPT (Karpathy's ``model.py`` and ``train.py`` as written, shrunk to tiny sizes), run in kiln
and in PyTorch from the same source text and kiln's initial weights, in float64; every loss, learning rate, the
estimated losses, the state after training, the resumed run and the generated tokens agree to 1e-10: eagerly, with
``model = torch.compile(model)`` as train.py writes it, and with the micro-step loop, clipping and the optimizer step
compiled as one function (each against PyTorch's eager loop). Under ``torch.amp.autocast('cpu', torch.bfloat16)``
they agree to bfloat16's rounding (see that test); with dropout the runs part after the first step, so that test
compares the first evaluation (eval mode) and checks both learn.

Where the text differs from nanoGPT's:
- ``get_batch`` draws its offsets from a NumPy generator both libraries share (``torch.randint`` draws from each
  library's own generator), then reads ``np.memmap`` of a ``train.bin``/``val.bin`` as train.py does.
- ``CausalSelfAttention`` takes the manual masked path (``register_buffer`` of ``torch.tril``) when
  ``config.flash`` is False; nanoGPT decides by ``hasattr(F, 'scaled_dot_product_attention')`` alone.
- train.py's globals (the configurator) are the keyword arguments of ``train_py``; printing and timing are left out.
- ``generate`` samples with each library's generator, so the two samples differ; the probe compares the distribution
  each step samples from along kiln's path (the deterministic part, through a ``trace`` hook after the draw), and
  checks the draws obey top-k.
- ``compile_step``: the micro-batches are fetched before the compiled function (in train.py's order), which runs the
  micro-step loop, ``scaler.unscale_``, ``clip_grad_norm_``, ``scaler.step`` and ``zero_grad``.
- AdamW's moments are read through kiln's ``torch_state_dict()``: kiln's ``optimizer.state_dict()`` keeps its own
  layout (NumPy arrays, one step count), which ``torch.save``/``torch.load`` and ``load_state_dict`` round-trip.
"""

from __future__ import annotations

import inspect
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep, snapshot
from oracles import libraries, require_torch


@pytest.fixture(autouse=True)
def matmul_precision_restored():
    """train.py sets ``torch.backends.cuda.matmul.allow_tf32 = True`` (float32 matmul precision 'high') in both
    libraries: put each back after the test, so later tests in the process see the default."""
    torch = require_torch()
    saved = [(lib, lib.get_float32_matmul_precision(), lib.backends.cudnn.allow_tf32) for lib in (kiln, torch)]
    yield
    for lib, precision, cudnn_tf32 in saved:
        lib.set_float32_matmul_precision(precision)
        lib.backends.cudnn.allow_tf32 = cudnn_tf32


@dataclass
class GPTConfig:
    block_size: int = 8
    vocab_size: int = 13
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 8
    dropout: float = 0.0
    bias: bool = True
    flash: bool = True


def define_gpt(torch, nn, F):  # noqa: C901 - model.py, one class after another
    """nanoGPT's model.py for ``torch`` (kiln or PyTorch); returns its GPT class."""

    class LayerNorm(nn.Module):
        """LayerNorm but with an optional bias. PyTorch doesn't support simply bias=False"""

        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, input):
            return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            assert config.n_embd % config.n_head == 0
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
            self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
            self.attn_dropout = nn.Dropout(config.dropout)
            self.resid_dropout = nn.Dropout(config.dropout)
            self.n_head = config.n_head
            self.n_embd = config.n_embd
            self.dropout = config.dropout
            self.flash = hasattr(torch.nn.functional, 'scaled_dot_product_attention') and config.flash
            if not self.flash:
                self.register_buffer("bias", torch.tril(torch.ones(config.block_size, config.block_size))
                                     .view(1, 1, config.block_size, config.block_size))

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            if self.flash:
                y = torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0, is_causal=True)
            else:
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
                att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float('-inf'))
                att = F.softmax(att, dim=-1)
                att = self.attn_dropout(att)
                y = att @ v
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            y = self.resid_dropout(self.c_proj(y))
            return y

    class MLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
            self.dropout = nn.Dropout(config.dropout)

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
            self.attn = CausalSelfAttention(config)
            self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
            self.mlp = MLP(config)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            x = x + self.mlp(self.ln_2(x))
            return x

    class GPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            assert config.vocab_size is not None
            assert config.block_size is not None
            self.config = config
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            ))
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # https://paperswithcode.com/method/weight-tying
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith('c_proj.weight'):
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

        def get_num_params(self, non_embedding=True):
            n_params = sum(p.numel() for p in self.parameters())
            if non_embedding:
                n_params -= self.transformer.wpe.weight.numel()
            return n_params

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx, targets=None):
            device = idx.device
            b, t = idx.size()
            assert t <= self.config.block_size, f"Cannot forward sequence of length {t}, block size is only {self.config.block_size}"
            pos = torch.arange(0, t, dtype=torch.long, device=device)  # shape (t)
            tok_emb = self.transformer.wte(idx)  # token embeddings of shape (b, t, n_embd)
            pos_emb = self.transformer.wpe(pos)  # position embeddings of shape (t, n_embd)
            x = self.transformer.drop(tok_emb + pos_emb)
            for block in self.transformer.h:
                x = block(x)
            x = self.transformer.ln_f(x)
            if targets is not None:
                logits = self.lm_head(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            else:
                logits = self.lm_head(x[:, [-1], :])  # note: using list [-1] to preserve the time dim
                loss = None
            return logits, loss

        def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
            param_dict = {pn: p for pn, p in self.named_parameters()}
            param_dict = {pn: p for pn, p in param_dict.items() if p.requires_grad}
            decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
            nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
            optim_groups = [
                {'params': decay_params, 'weight_decay': weight_decay},
                {'params': nodecay_params, 'weight_decay': 0.0}
            ]
            fused_available = 'fused' in inspect.signature(torch.optim.AdamW).parameters
            use_fused = fused_available and device_type == 'cuda'
            extra_args = dict(fused=True) if use_fused else dict()
            return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, **extra_args)

        def estimate_mfu(self, fwdbwd_per_iter, dt):
            N = self.get_num_params()
            cfg = self.config
            L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
            flops_per_token = 6 * N + 12 * L * H * Q * T
            flops_per_iter = flops_per_token * T * fwdbwd_per_iter
            return (flops_per_iter * (1.0 / dt)) / 312e12

        @torch.no_grad()
        def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, trace=None):
            for _ in range(max_new_tokens):
                idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
                logits, _ = self(idx_cond)
                logits = logits[:, -1, :] / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float('Inf')
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1)
                if trace is not None:  # the probe's hook: record probs, maybe replace the draw by the other library's
                    idx_next = trace(probs, idx_next)
                idx = torch.cat((idx, idx_next), dim=1)
            return idx

    return GPT


# --- train.py --------------------------------------------------------------------------------------------------


def write_dataset(data_dir, vocab_size, seed=0):
    """prepare.py's output: ``train.bin`` and ``val.bin`` of uint16 token ids (a noisy cycle, so the loss can fall)."""
    rng = np.random.default_rng(seed)
    for split, length in (("train", 120), ("val", 40)):
        ids = (np.arange(length) % (vocab_size - 1) + (rng.random(length) < 0.1)) % vocab_size
        ids.astype(np.uint16).tofile(os.path.join(data_dir, f"{split}.bin"))


def train_py(torch, nn, F, GPT, model, data_dir, out_dir, *, init_from='scratch', max_iters=4, dtype='float64',
             compile=False, compile_step=False, eval_interval=2, eval_iters=1, always_save_checkpoint=True,
             gradient_accumulation_steps=2, batch_size=2, block_size=8, learning_rate=1e-2, weight_decay=1e-1,
             beta1=0.9, beta2=0.95, grad_clip=1.0, decay_lr=True, warmup_iters=2, lr_decay_iters=6, min_lr=1e-3,
             seed=0):
    """train.py's body for one library, from ``model`` (init_from='scratch') or ``out_dir/ckpt.pt`` ('resume');
    returns what it would print (losses, lrs, estimated losses), the first logits and gradients, and the state.
    ``compile_step``: the micro-step loop, clipping and the optimizer step as one ``torch.compile``'d function."""
    config = {k: v for k, v in locals().items() if isinstance(v, (int, float, bool, str))}
    record = {"losses": [], "lrs": [], "eval": []}
    device = 'cpu'
    dtype = dtype or ('bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float16')
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(1337)
    torch.backends.cuda.matmul.allow_tf32 = True  # allow tf32 on matmul
    torch.backends.cudnn.allow_tf32 = True  # allow tf32 on cudnn
    device_type = 'cuda' if 'cuda' in device else 'cpu'  # for later use in torch.autocast
    batch_rng = np.random.default_rng(seed + (1000 if init_from == 'resume' else 0))
    ptdtype = {'float64': torch.float64, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if dtype == 'float64' else torch.amp.autocast(device_type=device_type, dtype=ptdtype)

    def get_batch(split):
        data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')
        ix = batch_rng.integers(len(data) - block_size, size=(batch_size,))  # torch.randint in train.py
        x = torch.stack([torch.from_numpy((data[i:i + block_size]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + block_size]).astype(np.int64)) for i in ix])
        x, y = x.to(device), y.to(device)
        return x, y

    iter_num = 0
    best_val_loss = 1e9
    if init_from == 'scratch':
        model_args = {k: getattr(model.config, k) for k in ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias',
                                                             'vocab_size', 'dropout', 'flash')}
    elif init_from == 'resume':
        ckpt_path = os.path.join(out_dir, 'ckpt.pt')
        checkpoint = torch.load(ckpt_path, map_location=device)
        checkpoint_model_args = checkpoint['model_args']
        model_args = {k: checkpoint_model_args[k] for k in ['n_layer', 'n_head', 'n_embd', 'block_size', 'bias',
                                                            'vocab_size', 'dropout', 'flash']}
        gptconf = GPTConfig(**model_args)
        model = GPT(gptconf)
        state_dict = checkpoint['model']
        unwanted_prefix = '_orig_mod.'
        for k, v in list(state_dict.items()):
            if k.startswith(unwanted_prefix):
                state_dict[k[len(unwanted_prefix):]] = state_dict.pop(k)
        model.load_state_dict(state_dict)
        iter_num = checkpoint['iter_num']
        best_val_loss = checkpoint['best_val_loss']
    model.to(device)
    scaler = torch.amp.GradScaler('cuda', enabled=(dtype == 'float16'))
    optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
    if init_from == 'resume':
        optimizer.load_state_dict(checkpoint['optimizer'])
    checkpoint = None
    if compile:
        unoptimized_model = model  # noqa: F841 - as train.py
        model = torch.compile(model)

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ['train', 'val']:
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                X, Y = get_batch(split)
                with ctx:
                    logits, loss = model(X, Y)
                losses[k] = loss.item()
            out[split] = losses.mean()
        model.train()
        return out

    def get_lr(it):
        if it < warmup_iters:
            return learning_rate * (it + 1) / (warmup_iters + 1)
        if it > lr_decay_iters:
            return min_lr
        decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
        assert 0 <= decay_ratio <= 1
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
        return min_lr + coeff * (learning_rate - min_lr)

    def micro_steps_and_update(batches):
        for X, Y in batches:
            with ctx:
                logits, loss = model(X, Y)
                loss = loss / gradient_accumulation_steps
            scaler.scale(loss).backward()
        if grad_clip != 0.0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss

    if compile_step:
        micro_steps_and_update = torch.compile(micro_steps_and_update, fullgraph=True)

    X, Y = get_batch('train')  # fetch the very first batch
    raw_model = model._orig_mod if compile else model
    while True:
        lr = get_lr(iter_num) if decay_lr else learning_rate
        for param_group in optimizer.param_groups:
            param_group['lr'] = lr
        record["lrs"].append([group['lr'] for group in optimizer.param_groups])

        if iter_num % eval_interval == 0:
            losses = estimate_loss()
            record["eval"].append([losses['train'].item(), losses['val'].item()])
            if losses['val'] < best_val_loss or always_save_checkpoint:
                best_val_loss = losses['val']
                if iter_num > 0:
                    checkpoint = {
                        'model': raw_model.state_dict(),
                        'optimizer': optimizer.state_dict(),
                        'model_args': model_args,
                        'iter_num': iter_num,
                        'best_val_loss': best_val_loss,
                        'config': config,
                    }
                    torch.save(checkpoint, os.path.join(out_dir, 'ckpt.pt'))

        if compile_step:
            batches = [(X, Y)] + [get_batch('train') for _ in range(gradient_accumulation_steps - 1)]
            loss = micro_steps_and_update(batches)
            X, Y = get_batch('train')
        else:
            for micro_step in range(gradient_accumulation_steps):
                with ctx:
                    logits, loss = model(X, Y)
                    loss = loss / gradient_accumulation_steps
                if "logits" not in record:
                    record["logits"], record["bfloat16_logits"] = array(logits.float()), logits.dtype == torch.bfloat16
                X, Y = get_batch('train')
                scaler.scale(loss).backward()
            if "grads" not in record:
                record["grads"] = {n: array(p.grad) for n, p in raw_model.named_parameters()}
            if grad_clip != 0.0:
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                record.setdefault("grad_norm", norm.item())
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

        lossf = loss.item() * gradient_accumulation_steps
        record["losses"].append(lossf)
        iter_num += 1
        if iter_num > max_iters:
            break
    record["mfu"] = raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, 1.0)
    record["state"] = snapshot(raw_model)
    record["optimizer"] = optimizer_moments(optimizer)
    return record


def optimizer_moments(optimizer):
    """AdamW's state per parameter in torch's layout (kiln's ``state_dict()`` keeps its own layout, NumPy arrays and
    one step count; ``torch_state_dict()`` is torch's)."""
    state = (optimizer.torch_state_dict() if hasattr(optimizer, "torch_state_dict") else optimizer.state_dict())["state"]
    return {f"{index}.{name}": np.asarray(array(value) if hasattr(value, "detach") else value, np.float64)
            for index in state for name, value in state[index].items()}


def nanogpt_in_lockstep(tmp_path, config, kiln_options=(), resume=True, **options):
    """train.py from scratch to ``max_iters``, then (``resume``) from its last checkpoint for two more iterations, in
    kiln (with ``kiln_options`` too: compile=True, compile_step=True) and in PyTorch's eager loop."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_dataset(data_dir, config.vocab_size)

    def train(torch, nn, F, model):
        out_dir = tmp_path / torch.__name__
        out_dir.mkdir()
        chosen = dict(options, **dict(kiln_options)) if torch is kiln else options
        GPT = define_gpt(torch, nn, F)
        scratch = train_py(torch, nn, F, GPT, model, data_dir, out_dir, max_iters=3, **chosen)
        if not resume:
            return {"scratch": scratch}
        resumed = train_py(torch, nn, F, GPT, None, data_dir, out_dir, init_from='resume', max_iters=4, **chosen)
        return {"scratch": scratch, "resumed": resumed}

    return run_in_lockstep(lambda torch, nn, F: define_gpt(torch, nn, F)(config), train)


@pytest.mark.parametrize("flash, bias", [(True, True), (False, False)])
def test_train_py_eager_as_torch(tmp_path, flash, bias, float64_default):
    ours, theirs = nanogpt_in_lockstep(tmp_path, GPTConfig(flash=flash, bias=bias))
    assert_same_records(ours, theirs)
    assert theirs["scratch"]["losses"][-1] < theirs["scratch"]["losses"][0]
    assert theirs["resumed"]["lrs"][0] == theirs["scratch"]["lrs"][2]  # resumed at iter_num 2, the last checkpoint


@pytest.mark.filterwarnings("error:kiln.compile")  # an eager fallback fails the test
@pytest.mark.parametrize("kiln_options", [dict(compile=True), dict(compile_step=True)], ids=["compiled-model", "compiled-step"])
def test_train_py_compiled_as_torchs_eager_loop(tmp_path, kiln_options, float64_default):
    ours, theirs = nanogpt_in_lockstep(tmp_path, GPTConfig(), kiln_options)
    if kiln_options.get("compile_step"):
        for record in (ours, theirs):  # the compiled step keeps no first logits and gradients
            for run in record.values():
                for key in ("logits", "bfloat16_logits", "grads", "grad_norm"):
                    run.pop(key, None)
    assert_same_records(ours, theirs)


def test_generate_top_k_samples_from_torchs_distributions(float64_default):
    """sample.py's ``model.generate(x, max_new_tokens, temperature=0.8, top_k=4)`` past the block size (the context
    cropped): kiln draws; torch, from the same weights, follows kiln's draws; each step's distribution agrees and is
    zero outside the top 4, where no draw falls."""
    torch = float64_default
    kiln.manual_seed(0)
    ours = define_gpt(*libraries("kiln"))(GPTConfig(block_size=6)).eval()
    theirs = define_gpt(*libraries("torch"))(GPTConfig(block_size=6)).eval()
    theirs.load_state_dict({key: torch.tensor(value) for key, value in snapshot(ours).items()})
    start, our_probs, their_probs = [[1, 2, 3], [4, 5, 6]], [], []

    def follow_kiln(probs, idx_next):
        their_probs.append(array(probs))
        return torch.tensor(drawn[:, [len(start[0]) + len(their_probs) - 1]])

    drawn = array(ours.generate(kiln.tensor(start), 5, temperature=0.8, top_k=4,
                                trace=lambda probs, idx_next: our_probs.append(array(probs)) or idx_next))
    np.testing.assert_array_equal(array(theirs.generate(torch.tensor(start), 5, temperature=0.8, top_k=4,
                                                        trace=follow_kiln)), drawn)
    drawn = drawn[:, 3:]
    assert_same_records(our_probs, their_probs)
    for step, probs in enumerate(our_probs):
        assert ((probs > 0).sum(axis=1) == 4).all() and (probs[[0, 1], drawn[:, step]] > 0).all()


def test_train_py_under_bfloat16_autocast_as_torch(tmp_path):
    """train.py's ``ctx = torch.amp.autocast(device_type='cpu', dtype=torch.bfloat16)`` on float32 weights: the
    logits are bfloat16 in both; logits, gradients and losses agree to bfloat16's rounding (2e-2: a matmul summed in
    another order may round to the neighbouring bfloat16, ~4e-3 apart). Adam divides each gradient by its own size,
    so a gradient element near zero whose sign that rounding flips moves its weight by up to 2 lr the other way: the
    weights and moments after 5 steps agree to 5e-2 absolute (lr 1e-2), a check that the update ran, not of its
    rounding."""
    ours, theirs = nanogpt_in_lockstep(tmp_path, GPTConfig(), resume=False, dtype='bfloat16')
    assert ours["scratch"]["bfloat16_logits"] and theirs["scratch"]["bfloat16_logits"]
    adam_amplified = dict(rtol=0, atol=5e-2)
    assert_same_records(ours, theirs, rtol=2e-2, atol=1e-3, looser={"state": adam_amplified, "optimizer": adam_amplified})


@pytest.mark.filterwarnings("error:kiln.compile")
@pytest.mark.parametrize("kiln_options", [{}, dict(compile=True)], ids=["eager", "compiled-model"])
def test_train_py_with_dropout_evaluates_as_torch_and_learns(tmp_path, kiln_options, float64_default):
    """dropout=0.1: training draws from each library's generator, so the runs part after the first step; the first
    estimate_loss (eval mode, before any step) agrees to 1e-10, which it cannot if a dropout layer stayed on."""
    ours, theirs = nanogpt_in_lockstep(tmp_path, GPTConfig(dropout=0.1), kiln_options, resume=False)
    assert_same_records(ours["scratch"]["eval"][0], theirs["scratch"]["eval"][0])
    for record in (ours, theirs):
        assert record["scratch"]["eval"][-1][0] < record["scratch"]["eval"][0][0]
