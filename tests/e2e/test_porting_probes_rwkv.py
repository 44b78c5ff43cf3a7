"""Porting probe: RWKV-4 (BlinkDL's RWKV-LM ``RWKV-v4/src/model.py``, GPT mode) written once as its users write it
(``torch`` is ``torch`` or ``kiln``), with the WKV kernel as the reference recurrence in plain torch instead of CUDA.

- Time-mix: ``nn.ZeroPad2d((0, 0, 1, -1))`` time shift, ``time_mix_k/v/r`` interpolation, ``sigmoid`` receptance and
  the WKV recurrence: a Python loop over time with the numerically stable max trick (``ww = time_first + k``,
  ``p = torch.maximum(pp, ww)``, ``e1 = torch.exp(pp - p)``, ...), decay ``w = -torch.exp(time_decay)`` in log space;
  or the parallel form a GPT-mode reader writes: the per-step factor ``torch.exp(-torch.exp(time_decay))`` raised to
  the distances by ``torch.pow``, masked with ``torch.tril``, an ``einsum`` over time.
- Channel-mix: time shift, squared ReLU ``torch.square(torch.relu(k))``, sigmoid gate.
- LayerNorm (``ln0`` on the first block), the head tied to the embedding, RWKV's own init (``RWKV_Init``: orthogonal
  with gains, zeros where ``scale_init = 0``, the "fancy" time_decay / time_first / time_mix curves under
  ``torch.no_grad()`` by item assignment), ``L2Wrap`` (a ``torch.autograd.Function`` nudging the max logit),
  Adam(betas=(0.9, 0.99), eps=1e-8) with v4neo's two param groups (``my_lr_scale`` 2 for ``time_decay``, the lr set
  by hand each step through ``param_groups``).

Checked against torch 2.13 from kiln's initial weights (then perturbed by the same noise, since RWKV's init zeroes the
key/receptance/output projections): the deterministic init curves, the first logits, the first gradients, the losses
and the parameters after a few steps to 1e-10 in float64, eagerly and with the whole step in one
``kiln.compile(fullgraph=True)`` graph; and a float32 run (RWKV trains in float32/bf16) at float32's level
(rtol 1e-5, atol 2e-6: the first logits differ by up to 8e-7, summation orders).

What broke: GPT mode ran as first written, in both forms of the WKV. The RNN mode (``test_porting_probes_rwkv_rnn.py``)
needed ``torch.jit.ScriptModule``/``script_method`` (``tests/frontend/test_jit_script_module_vs_torch.py``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require_torch

VOCAB, EMBED, LAYERS, CTX, BATCH = 11, 8, 2, 6, 2


def rwkv(torch, nn, F, wkv_form="loop", n_layer=LAYERS, n_embd=EMBED, vocab_size=VOCAB):
    class L2Wrap(torch.autograd.Function):
        @staticmethod
        def forward(ctx, loss, y):
            ctx.save_for_backward(y)
            return loss

        @staticmethod
        def backward(ctx, grad_output):
            y = ctx.saved_tensors[0]
            # to encourage the logits to be close to 0
            factor = 1e-4 / (y.shape[0] * y.shape[1])
            maxx, ids = torch.max(y, -1, keepdim=True)
            gy = torch.zeros_like(y)
            gy.scatter_(-1, ids, maxx * factor)
            return (grad_output, gy)

    def run_wkv_loop(w, u, k, v):
        B, T, C = k.size()
        aa = torch.zeros(B, C, dtype=k.dtype)
        bb = torch.zeros(B, C, dtype=k.dtype)
        pp = torch.full((B, C), -1e38, dtype=k.dtype)
        out = []
        for t in range(T):
            kk = k[:, t]
            vv = v[:, t]
            ww = u + kk
            p = torch.maximum(pp, ww)
            e1 = torch.exp(pp - p)
            e2 = torch.exp(ww - p)
            out.append((e1 * aa + e2 * vv) / (e1 * bb + e2))
            ww = w + pp
            p = torch.maximum(ww, kk)
            e1 = torch.exp(ww - p)
            e2 = torch.exp(kk - p)
            aa = e1 * aa + e2 * vv
            bb = e1 * bb + e2
            pp = p
        return torch.stack(out, dim=1)

    def run_wkv_parallel(time_decay, time_first, k, v):
        T = k.shape[1]
        decay = torch.exp(-torch.exp(time_decay))  # (C,) the factor per step back in time
        t_idx = torch.arange(T)
        distance = (t_idx[:, None] - t_idx[None, :] - 1).clamp(min=0)  # (T, T)
        past = torch.tril(torch.ones(T, T), diagonal=-1)
        weights = torch.pow(decay[None, None, :], distance[:, :, None].to(k.dtype)) * past[:, :, None]
        weights = weights + torch.eye(T)[:, :, None] * torch.exp(time_first)  # (T, T, C): the bonus on the diagonal
        ek = torch.exp(k)
        num = torch.einsum("tic,bic->btc", weights, ek * v)
        den = torch.einsum("tic,bic->btc", weights, ek)
        return num / den

    class RWKV_TimeMix(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            self.layer_id = layer_id
            attn_sz = n_embd
            with torch.no_grad():  # fancy init
                ratio_0_to_1 = layer_id / (n_layer - 1)  # 0 to 1
                ratio_1_to_almost0 = 1.0 - (layer_id / n_layer)  # 1 to ~0
                decay_speed = torch.ones(attn_sz)
                for h in range(attn_sz):
                    decay_speed[h] = -5 + 8 * (h / (attn_sz - 1)) ** (0.7 + 1.3 * ratio_0_to_1)
                self.time_decay = nn.Parameter(decay_speed)
                zigzag = torch.tensor([(i + 1) % 3 - 1 for i in range(attn_sz)]) * 0.5
                self.time_first = nn.Parameter(torch.ones(attn_sz) * math.log(0.3) + zigzag)
                x = torch.ones(1, 1, n_embd)
                for i in range(n_embd):
                    x[0, 0, i] = i / n_embd
                self.time_mix_k = nn.Parameter(torch.pow(x, ratio_1_to_almost0))
                self.time_mix_v = nn.Parameter(torch.pow(x, ratio_1_to_almost0) + 0.3 * ratio_0_to_1)
                self.time_mix_r = nn.Parameter(torch.pow(x, 0.5 * ratio_1_to_almost0))
            self.time_shift = nn.ZeroPad2d((0, 0, 1, -1))
            self.key = nn.Linear(n_embd, attn_sz, bias=False)
            self.value = nn.Linear(n_embd, attn_sz, bias=False)
            self.receptance = nn.Linear(n_embd, attn_sz, bias=False)
            self.output = nn.Linear(attn_sz, n_embd, bias=False)
            self.key.scale_init = 0
            self.receptance.scale_init = 0
            self.output.scale_init = 0

        def jit_func(self, x):
            xx = self.time_shift(x)
            xk = x * self.time_mix_k + xx * (1 - self.time_mix_k)
            xv = x * self.time_mix_v + xx * (1 - self.time_mix_v)
            xr = x * self.time_mix_r + xx * (1 - self.time_mix_r)
            k = self.key(xk)
            v = self.value(xv)
            r = self.receptance(xr)
            sr = torch.sigmoid(r)
            return sr, k, v

        def forward(self, x):
            B, T, C = x.size()
            sr, k, v = self.jit_func(x)
            if wkv_form == "loop":
                wkv = run_wkv_loop(-torch.exp(self.time_decay), self.time_first, k, v)
            else:
                wkv = run_wkv_parallel(self.time_decay, self.time_first, k, v)
            return self.output(sr * wkv)

    class RWKV_ChannelMix(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            self.layer_id = layer_id
            self.time_shift = nn.ZeroPad2d((0, 0, 1, -1))
            with torch.no_grad():  # fancy init of time_mix
                ratio_1_to_almost0 = 1.0 - (layer_id / n_layer)  # 1 to ~0
                x = torch.ones(1, 1, n_embd)
                for i in range(n_embd):
                    x[0, 0, i] = i / n_embd
                self.time_mix_k = nn.Parameter(torch.pow(x, ratio_1_to_almost0))
                self.time_mix_r = nn.Parameter(torch.pow(x, ratio_1_to_almost0))
            hidden_sz = 4 * n_embd
            self.key = nn.Linear(n_embd, hidden_sz, bias=False)
            self.receptance = nn.Linear(n_embd, n_embd, bias=False)
            self.value = nn.Linear(hidden_sz, n_embd, bias=False)
            self.value.scale_init = 0
            self.receptance.scale_init = 0

        def forward(self, x):
            xx = self.time_shift(x)
            xk = x * self.time_mix_k + xx * (1 - self.time_mix_k)
            xr = x * self.time_mix_r + xx * (1 - self.time_mix_r)
            k = self.key(xk)
            k = torch.square(torch.relu(k))
            kv = self.value(k)
            rkv = torch.sigmoid(self.receptance(xr)) * kv
            return rkv

    class Block(nn.Module):
        def __init__(self, layer_id):
            super().__init__()
            self.layer_id = layer_id
            self.ln1 = nn.LayerNorm(n_embd)
            self.ln2 = nn.LayerNorm(n_embd)
            if self.layer_id == 0:
                self.ln0 = nn.LayerNorm(n_embd)
            self.att = RWKV_TimeMix(layer_id)
            self.ffn = RWKV_ChannelMix(layer_id)

        def forward(self, x):
            if self.layer_id == 0:
                x = self.ln0(x)
            x = x + self.att(self.ln1(x))
            x = x + self.ffn(self.ln2(x))
            return x

    def RWKV_Init(model):
        for m in model.modules():
            if not isinstance(m, (nn.Linear, nn.Embedding)):
                continue
            ww = m.weight
            with torch.no_grad():
                shape = ww.shape
                gain = 1.0
                scale = 1.0  # extra scale for gain
                if isinstance(m, nn.Embedding):
                    gain = math.sqrt(max(shape[0], shape[1]))
                    if shape[0] == vocab_size and shape[1] == n_embd:  # token emb?
                        scale = 1e-4
                    else:
                        scale = 0
                if isinstance(m, nn.Linear):
                    if shape[0] > shape[1]:
                        gain = math.sqrt(shape[0] / shape[1])
                    if shape[0] == vocab_size and shape[1] == n_embd:  # final projection?
                        scale = 0.5
                if hasattr(m, "scale_init"):
                    scale = m.scale_init
                gain *= scale
                if scale == -999:
                    nn.init.eye_(ww)
                elif gain == 0:
                    nn.init.zeros_(ww)  # zero init is great for some RWKV matrices
                elif gain > 0:
                    nn.init.orthogonal_(ww, gain=gain)
                else:
                    nn.init.normal_(ww, mean=0.0, std=-scale)

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab_size, n_embd)
            self.blocks = nn.Sequential(*[Block(i) for i in range(n_layer)])
            self.ln_out = nn.LayerNorm(n_embd)
            self.head = nn.Linear(n_embd, vocab_size, bias=False)
            self.head.weight = self.emb.weight  # tied
            RWKV_Init(self)

        def forward(self, idx, targets=None):
            idx = idx.to(self.emb.weight.device)
            B, T = idx.size()
            x = self.emb(idx)
            x = self.blocks(x)
            x = self.ln_out(x)
            x = self.head(x)
            if targets is None:
                return x
            loss = F.cross_entropy(x.view(-1, x.size(-1)), targets.to(x.device).view(-1))
            return L2Wrap.apply(loss, x), x

    return GPT()


def rwkv_optimizer(torch, model, lr):
    """v4neo's groups: ``time_decay``/``time_first`` at twice the lr (``my_lr_scale``), no weight decay."""
    lr_2x = [p for n, p in model.named_parameters() if "time_decay" in n or "time_first" in n]
    lr_1x = [p for n, p in model.named_parameters() if not ("time_decay" in n or "time_first" in n)]
    groups = [{"params": lr_1x, "weight_decay": 0.0, "my_lr_scale": 1.0},
              {"params": lr_2x, "weight_decay": 0.0, "my_lr_scale": 2.0}]
    return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.99), eps=1e-8)


def set_lr(optimizer, lr):
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr * param_group["my_lr_scale"]


def _data(steps=3, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, (steps, BATCH, CTX + 1))
    return tokens[:, :, :-1], tokens[:, :, 1:], rng


def perturb(torch, model, rng, scale=0.3):
    """The same noise added to every parameter in both libraries (RWKV's init zeroes several projections)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.tensor(rng.standard_normal(tuple(p.shape)) * scale, dtype=p.dtype))


def lr_at(step, lr_init=6e-3, lr_final=1e-3, steps=3):
    return lr_init * math.exp(math.log(lr_final / lr_init) * step / steps)  # RWKV's exponential lr decay


def train_rwkv(steps=3):
    inputs, targets, _ = _data(steps)

    def train(torch, nn, F, model):
        perturb(torch, model, np.random.default_rng(7))
        optimizer = rwkv_optimizer(torch, model, lr_at(0))
        record = {"losses": []}
        for step in range(steps):
            set_lr(optimizer, lr_at(step))
            loss, logits = model(torch.tensor(inputs[step]), torch.tensor(targets[step]))
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("logits", array(logits))
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("wkv_form", ["loop", "parallel"])
def test_rwkv_trains_as_torch(wkv_form, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: rwkv(torch, nn, F, wkv_form), train_rwkv())
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("wkv_form", ["loop", "parallel"])
def test_rwkv_compiled_step_as_torch(wkv_form, float64_default):
    """The whole step (the lr set by hand before each call, zero_grad, the L2Wrap loss, backward, Adam) compiled."""
    inputs, targets, _ = _data(3)

    def train(torch, nn, F, model):
        perturb(torch, model, np.random.default_rng(7))
        optimizer = rwkv_optimizer(torch, model, lr_at(0))

        def train_step(idx, target):
            optimizer.zero_grad()
            loss, _ = model(idx, target)
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        losses = []
        for step in range(3):
            set_lr(optimizer, lr_at(step))
            losses.append(run(torch.tensor(inputs[step]), torch.tensor(targets[step])).item())
        return {"losses": losses, "state": snapshot(model)}

    ours, theirs = run_in_lockstep(lambda torch, nn, F: rwkv(torch, nn, F, wkv_form), train)
    assert_same_records(ours, theirs)


def test_rwkv_init_curves_and_tied_head_as_torch(float64_default):
    """RWKV's deterministic init (time_decay, time_first, time_mix by item assignment under no_grad; the zeroed
    projections) equals torch's; the head is the embedding (one parameter); the orthogonal inits are orthogonal with
    RWKV's gains."""
    states, names = [], []
    for name in ("kiln", "torch"):
        lib, nn, F = libraries(name)
        model = rwkv(lib, nn, F)
        assert model.head.weight is model.emb.weight
        names.append([n for n, _ in model.named_parameters()])
        states.append(snapshot(model))
    assert names[0] == names[1] and "head.weight" not in names[0] and len(names[0]) == 41
    for key, value in states[1].items():
        if "time_" in key or key.endswith(("att.key.weight", "att.receptance.weight", "att.output.weight",
                                             "ffn.value.weight", "ffn.receptance.weight")):
            np.testing.assert_allclose(states[0][key], value, rtol=1e-15, atol=0, err_msg=key)
    ffn_key = states[0]["blocks.0.ffn.key.weight"]  # (32, 8): orthogonal columns, gain sqrt(32 / 8)
    np.testing.assert_allclose(ffn_key.T @ ffn_key, 4.0 * np.eye(EMBED), atol=1e-12)
    head = states[0]["head.weight"]  # the head's init runs after the embedding's: scale 0.5, gain sqrt(11 / 8)
    np.testing.assert_allclose(head.T @ head, 0.25 * VOCAB / EMBED * np.eye(EMBED), atol=1e-12)


def test_rwkv_float32_as_torch():
    """RWKV trains in float32: the same program in float32 agrees at float32's level (different exp/summation
    orders give last-bit differences that a few Adam steps carry along)."""
    require_torch()
    ours, theirs = run_in_lockstep(rwkv, train_rwkv())
    assert ours["logits"].dtype == np.float32 and ours["state"]["emb.weight"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-5, atol=2e-6)

