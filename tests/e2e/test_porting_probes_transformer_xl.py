"""Porting probe: Transformer-XL (kimiyoung/transformer-xl ``pytorch/mem_transformer.py``, attn_type 0) written once
as it is written there (``torch`` is ``torch`` or ``kiln``), trained a few steps on consecutive segments with its
memories, from kiln's initial weights.

- ``RelPartialLearnableMultiHeadAttn``: ``qkv_net`` on ``torch.cat([mems, w], 0)``, ``torch.chunk(.., 3, dim=-1)``,
  ``w_head_q[-qlen:]``, the old-style ``torch.einsum('ibnd,jbnd->ijbn', (rw_head_q, w_head_k))`` with a tuple of
  operands, ``r_w_bias``/``r_r_bias``, ``_rel_shift`` (zero pad, ``cat``, ``view`` to ``(klen + 1, qlen, ...)``, drop
  the first row, ``view_as``), ``attn_score.mul_(self.scale)``, the mask applied as
  ``attn_score.float().masked_fill(mask, -float('inf')).type_as(attn_score)`` (a float32 round trip even in float64)
  after ``attn_mask.any().item()``; post-LayerNorm residuals and ``PositionwiseFF`` with ``nn.ReLU(inplace=True)``.
- ``PositionalEmbedding`` by ``torch.ger`` of ``arange(klen - 1, -1, -1.0)`` with ``inv_freq``, ``pos_seq.clamp_``.
- ``AdaptiveEmbedding`` (``div_val`` 1: one table; ``div_val`` 2: per-cluster tables picked by ``nonzero().squeeze()``,
  ``index_select``, ``F.linear`` with ``emb_projs`` from an ``nn.ParameterList``, ``index_copy_``), ``embed.mul_``.
- Segment recurrence: ``init_mems`` gives ``torch.empty(0)`` per layer (``torch.cat`` skips such legacy empties),
  ``_update_mems`` under ``torch.no_grad()`` with ``.detach()`` (called with ``mlen, qlen`` swapped, as the original
  does), ``dec_attn_mask = torch.triu(word_emb.new_ones(qlen, klen), diagonal=1+mlen).bool()[:,:,None]`` (the
  original's ``.byte()``: torch 2.x's masked_fill refuses uint8 masks, and so does kiln, with torch's words).
- Loss: tied ``ProjectedAdaptiveLogSoftmax`` without clusters (``-F.log_softmax(logit).gather(1, target[:, None])``),
  ``loss.float().mean().type_as(loss)``; train.py's init (``model.apply(weights_init)`` by class name), Adam with
  warmup set through ``param_groups[0]['lr']`` then ``CosineAnnealingLR``, ``clip_grad_norm_``.

Checked against torch 2.13 in float64 to 1e-10 (first losses, first gradients, the memories carried between segments,
the state after the steps), eagerly and with the step (zero_grad through optimizer.step, memories in and out) in one
``kiln.compile(fullgraph=True)`` graph; float32 (how it trains) at float32's level.

What broke: ``torch.cat([torch.empty(0), h], 0)`` (the initial mems) raised
(``tests/frontend/test_cat_legacy_empty_vs_torch.py``); ``index_select`` refused the 0-d index that
``nonzero().squeeze()`` gives for a cluster holding one token (``tests/frontend/test_index_select_scalar_index_vs_torch.py``);
``attn_mask.any().item()`` stopped the compiled step, though the mask is built from constants only (now known while
tracing: ``tests/runtime/test_compiled_item_of_known_value.py``; torch.compile would break the graph there); the
``.byte()`` mask was refused with kiln's words, now torch's (``tests/frontend/test_mask_dtype_errors_vs_torch.py``).
Tolerance: the losses to 2.5e-7, as the original takes their mean in float32 (``loss.float().mean()``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import require_torch

N_TOKEN, N_LAYER, N_HEAD, D_MODEL, D_HEAD, D_INNER = 13, 2, 2, 8, 4, 16
TGT_LEN, MEM_LEN, BATCH, SEGMENTS = 4, 4, 2, 3


def transformer_xl(torch, nn, F, div_val=1, cutoffs=(), clamp_len=-1, tie_weight=True, pre_lnorm=False):
    class PositionalEmbedding(nn.Module):
        def __init__(self, demb):
            super().__init__()
            self.demb = demb
            inv_freq = 1 / (10000 ** (torch.arange(0.0, demb, 2.0) / demb))
            self.register_buffer("inv_freq", inv_freq)

        def forward(self, pos_seq, bsz=None):
            sinusoid_inp = torch.ger(pos_seq, self.inv_freq)
            pos_emb = torch.cat([sinusoid_inp.sin(), sinusoid_inp.cos()], dim=-1)
            if bsz is not None:
                return pos_emb[:, None, :].expand(-1, bsz, -1)
            else:
                return pos_emb[:, None, :]

    class PositionwiseFF(nn.Module):
        def __init__(self, d_model, d_inner, dropout, pre_lnorm=False):
            super().__init__()
            self.CoreNet = nn.Sequential(
                nn.Linear(d_model, d_inner), nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(d_inner, d_model),
                nn.Dropout(dropout),
            )
            self.layer_norm = nn.LayerNorm(d_model)
            self.pre_lnorm = pre_lnorm

        def forward(self, inp):
            if self.pre_lnorm:
                core_out = self.CoreNet(self.layer_norm(inp))
                output = core_out + inp
            else:
                core_out = self.CoreNet(inp)
                output = self.layer_norm(inp + core_out)
            return output

    class RelMultiHeadAttn(nn.Module):
        def __init__(self, n_head, d_model, d_head, dropout, dropatt=0, pre_lnorm=False):
            super().__init__()
            self.n_head = n_head
            self.d_model = d_model
            self.d_head = d_head
            self.dropout = dropout
            self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head, bias=False)
            self.drop = nn.Dropout(dropout)
            self.dropatt = nn.Dropout(dropatt)
            self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
            self.layer_norm = nn.LayerNorm(d_model)
            self.scale = 1 / (d_head ** 0.5)
            self.pre_lnorm = pre_lnorm

        def _rel_shift(self, x, zero_triu=False):
            zero_pad = torch.zeros((x.size(0), 1, *x.size()[2:]), device=x.device, dtype=x.dtype)
            x_padded = torch.cat([zero_pad, x], dim=1)
            x_padded = x_padded.view(x.size(1) + 1, x.size(0), *x.size()[2:])
            x = x_padded[1:].view_as(x)
            if zero_triu:
                ones = torch.ones((x.size(0), x.size(1)))
                x = x * torch.tril(ones, x.size(1) - x.size(0))[:, :, None, None]
            return x

    class RelPartialLearnableMultiHeadAttn(RelMultiHeadAttn):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.r_net = nn.Linear(self.d_model, self.n_head * self.d_head, bias=False)

        def forward(self, w, r, r_w_bias, r_r_bias, attn_mask=None, mems=None):
            qlen, rlen, bsz = w.size(0), r.size(0), w.size(1)
            if mems is not None:
                cat = torch.cat([mems, w], 0)
                if self.pre_lnorm:
                    w_heads = self.qkv_net(self.layer_norm(cat))
                else:
                    w_heads = self.qkv_net(cat)
                r_head_k = self.r_net(r)
                w_head_q, w_head_k, w_head_v = torch.chunk(w_heads, 3, dim=-1)
                w_head_q = w_head_q[-qlen:]
            else:
                if self.pre_lnorm:
                    w_heads = self.qkv_net(self.layer_norm(w))
                else:
                    w_heads = self.qkv_net(w)
                r_head_k = self.r_net(r)
                w_head_q, w_head_k, w_head_v = torch.chunk(w_heads, 3, dim=-1)
            klen = w_head_k.size(0)
            w_head_q = w_head_q.view(qlen, bsz, self.n_head, self.d_head)  # qlen x bsz x n_head x d_head
            w_head_k = w_head_k.view(klen, bsz, self.n_head, self.d_head)  # qlen x bsz x n_head x d_head
            w_head_v = w_head_v.view(klen, bsz, self.n_head, self.d_head)  # qlen x bsz x n_head x d_head
            r_head_k = r_head_k.view(rlen, self.n_head, self.d_head)  # qlen x n_head x d_head
            #### compute attention score
            rw_head_q = w_head_q + r_w_bias  # qlen x bsz x n_head x d_head
            AC = torch.einsum("ibnd,jbnd->ijbn", (rw_head_q, w_head_k))  # qlen x klen x bsz x n_head
            rr_head_q = w_head_q + r_r_bias
            BD = torch.einsum("ibnd,jnd->ijbn", (rr_head_q, r_head_k))  # qlen x klen x bsz x n_head
            BD = self._rel_shift(BD)
            # [qlen x klen x bsz x n_head]
            attn_score = AC + BD
            attn_score.mul_(self.scale)
            #### compute attention probability
            if attn_mask is not None and attn_mask.any().item():
                if attn_mask.dim() == 2:
                    attn_score = attn_score.float().masked_fill(
                        attn_mask[None, :, :, None], -float("inf")).type_as(attn_score)
                elif attn_mask.dim() == 3:
                    attn_score = attn_score.float().masked_fill(
                        attn_mask[:, :, :, None], -float("inf")).type_as(attn_score)
            # [qlen x klen x bsz x n_head]
            attn_prob = F.softmax(attn_score, dim=1)
            attn_prob = self.dropatt(attn_prob)
            #### compute attention vector
            attn_vec = torch.einsum("ijbn,jbnd->ibnd", (attn_prob, w_head_v))
            # [qlen x bsz x n_head x d_head]
            attn_vec = attn_vec.contiguous().view(attn_vec.size(0), attn_vec.size(1), self.n_head * self.d_head)
            ##### linear projection
            attn_out = self.o_net(attn_vec)
            attn_out = self.drop(attn_out)
            if self.pre_lnorm:
                output = w + attn_out
            else:
                output = self.layer_norm(w + attn_out)
            return output

    class RelPartialLearnableDecoderLayer(nn.Module):
        def __init__(self, n_head, d_model, d_head, d_inner, dropout, **kwargs):
            super().__init__()
            self.dec_attn = RelPartialLearnableMultiHeadAttn(n_head, d_model, d_head, dropout, **kwargs)
            self.pos_ff = PositionwiseFF(d_model, d_inner, dropout, pre_lnorm=kwargs.get("pre_lnorm"))

        def forward(self, dec_inp, r, r_w_bias, r_r_bias, dec_attn_mask=None, mems=None):
            output = self.dec_attn(dec_inp, r, r_w_bias, r_r_bias, attn_mask=dec_attn_mask, mems=mems)
            output = self.pos_ff(output)
            return output

    class AdaptiveEmbedding(nn.Module):
        def __init__(self, n_token, d_embed, d_proj, cutoffs, div_val=1):
            super().__init__()
            self.n_token = n_token
            self.d_embed = d_embed
            self.cutoffs = cutoffs + [n_token]
            self.div_val = div_val
            self.d_proj = d_proj
            self.emb_scale = d_proj ** 0.5
            self.cutoff_ends = [0] + self.cutoffs
            self.emb_layers = nn.ModuleList()
            self.emb_projs = nn.ParameterList()
            if div_val == 1:
                self.emb_layers.append(nn.Embedding(n_token, d_embed))
                if d_proj != d_embed:
                    self.emb_projs.append(nn.Parameter(torch.Tensor(d_proj, d_embed)))
            else:
                for i in range(len(self.cutoffs)):
                    l_idx, r_idx = self.cutoff_ends[i], self.cutoff_ends[i + 1]
                    d_emb_i = d_embed // (div_val ** i)
                    self.emb_layers.append(nn.Embedding(r_idx - l_idx, d_emb_i))
                    self.emb_projs.append(nn.Parameter(torch.Tensor(d_proj, d_emb_i)))

        def forward(self, inp):
            if self.div_val == 1:
                embed = self.emb_layers[0](inp)
                if self.d_proj != self.d_embed:
                    embed = F.linear(embed, self.emb_projs[0])
            else:
                param = next(self.parameters())
                inp_flat = inp.view(-1)
                emb_flat = torch.zeros([inp_flat.size(0), self.d_proj], dtype=param.dtype, device=param.device)
                for i in range(len(self.cutoffs)):
                    l_idx, r_idx = self.cutoff_ends[i], self.cutoff_ends[i + 1]
                    mask_i = (inp_flat >= l_idx) & (inp_flat < r_idx)
                    indices_i = mask_i.nonzero().squeeze()
                    if indices_i.numel() == 0:
                        continue
                    inp_i = inp_flat.index_select(0, indices_i) - l_idx
                    emb_i = self.emb_layers[i](inp_i)
                    emb_i = F.linear(emb_i, self.emb_projs[i])
                    emb_flat.index_copy_(0, indices_i, emb_i)
                embed = emb_flat.view(*inp.size(), self.d_proj)
            embed.mul_(self.emb_scale)
            return embed

    class ProjectedLogSoftmax(nn.Module):
        """``ProjectedAdaptiveLogSoftmax`` with no clusters (``n_clusters == 0``), its path for a small vocabulary."""

        def __init__(self, n_token, d_embed, d_proj):
            super().__init__()
            self.out_layers = nn.ModuleList([nn.Linear(d_embed, n_token)])
            self.out_projs = nn.ParameterList()
            if d_proj != d_embed:
                self.out_projs.append(nn.Parameter(torch.Tensor(d_proj, d_embed)))

        def _compute_logit(self, hidden, weight, bias, proj):
            if proj is None:
                logit = F.linear(hidden, weight, bias=bias)
            else:
                proj_hid = F.linear(hidden, proj.t().contiguous())
                logit = F.linear(proj_hid, weight, bias=bias)
            return logit

        def forward(self, hidden, target):
            proj = self.out_projs[0] if len(self.out_projs) else None
            logit = self._compute_logit(hidden, self.out_layers[0].weight, self.out_layers[0].bias, proj)
            nll = -F.log_softmax(logit, dim=-1).gather(1, target.unsqueeze(1)).squeeze(1)
            return nll

    class MemTransformerLM(nn.Module):
        def __init__(self, n_token, n_layer, n_head, d_model, d_head, d_inner, dropout, dropatt,
                     tie_weight=True, d_embed=None, div_val=1, pre_lnorm=False, tgt_len=None, ext_len=None,
                     mem_len=None, cutoffs=[], same_length=False, clamp_len=-1):
            super().__init__()
            self.n_token = n_token
            d_embed = d_model if d_embed is None else d_embed
            self.d_embed = d_embed
            self.d_model = d_model
            self.n_head = n_head
            self.d_head = d_head
            self.word_emb = AdaptiveEmbedding(n_token, d_embed, d_model, cutoffs, div_val=div_val)
            self.drop = nn.Dropout(dropout)
            self.n_layer = n_layer
            self.tgt_len = tgt_len
            self.mem_len = mem_len
            self.ext_len = ext_len
            self.max_klen = tgt_len + ext_len + mem_len
            self.layers = nn.ModuleList()
            for i in range(n_layer):
                self.layers.append(RelPartialLearnableDecoderLayer(
                    n_head, d_model, d_head, d_inner, dropout, dropatt=dropatt, pre_lnorm=pre_lnorm))
            self.crit = ProjectedLogSoftmax(n_token, d_embed, d_model)
            if tie_weight:
                self.crit.out_layers[0].weight = self.word_emb.emb_layers[0].weight
            self.same_length = same_length
            self.clamp_len = clamp_len
            self.pos_emb = PositionalEmbedding(self.d_model)
            self.r_w_bias = nn.Parameter(torch.Tensor(self.n_head, self.d_head))
            self.r_r_bias = nn.Parameter(torch.Tensor(self.n_head, self.d_head))

        def init_mems(self):
            if self.mem_len > 0:
                mems = []
                param = next(self.parameters())
                for i in range(self.n_layer + 1):
                    empty = torch.empty(0, dtype=param.dtype, device=param.device)
                    mems.append(empty)
                return mems
            else:
                return None

        def _update_mems(self, hids, mems, qlen, mlen):
            # does not deal with None
            if mems is None:
                return None
            # mems is not None
            assert len(hids) == len(mems), "len(hids) != len(mems)"
            # There are `mlen + qlen` steps that can be cached into mems
            with torch.no_grad():
                new_mems = []
                end_idx = mlen + max(0, qlen - 0 - self.ext_len)
                beg_idx = max(0, end_idx - self.mem_len)
                for i in range(len(hids)):
                    cat = torch.cat([mems[i], hids[i]], dim=0)
                    new_mems.append(cat[beg_idx:end_idx].detach())
            return new_mems

        def _forward(self, dec_inp, mems=None):
            qlen, bsz = dec_inp.size()
            word_emb = self.word_emb(dec_inp)
            mlen = mems[0].size(0) if mems is not None else 0
            klen = mlen + qlen
            if self.same_length:
                all_ones = word_emb.new_ones(qlen, klen)
                mask_len = klen - self.mem_len
                if mask_len > 0:
                    mask_shift_len = qlen - mask_len
                else:
                    mask_shift_len = qlen
                dec_attn_mask = (torch.triu(all_ones, 1 + mlen) + torch.tril(all_ones, -mask_shift_len)).bool()[:, :, None]
            else:
                dec_attn_mask = torch.triu(word_emb.new_ones(qlen, klen), diagonal=1 + mlen).bool()[:, :, None]
            hids = []
            pos_seq = torch.arange(klen - 1, -1, -1.0, device=word_emb.device, dtype=word_emb.dtype)
            if self.clamp_len > 0:
                pos_seq.clamp_(max=self.clamp_len)
            pos_emb = self.pos_emb(pos_seq)
            core_out = self.drop(word_emb)
            pos_emb = self.drop(pos_emb)
            hids.append(core_out)
            for i, layer in enumerate(self.layers):
                mems_i = None if mems is None else mems[i]
                core_out = layer(core_out, pos_emb, self.r_w_bias, self.r_r_bias, dec_attn_mask=dec_attn_mask,
                                 mems=mems_i)
                hids.append(core_out)
            core_out = self.drop(core_out)
            new_mems = self._update_mems(hids, mems, mlen, qlen)
            return core_out, new_mems

        def forward(self, data, target, *mems):
            # nn.DataParallel does not allow size(0) tensors to be broadcasted.
            # So, have to initialize size(0) mems inside the model forward.
            # Moreover, have to return new_mems to allow nn.DataParallel to piece
            # them together.
            if not mems:
                mems = self.init_mems()
            tgt_len = target.size(0)
            hidden, new_mems = self._forward(data, mems=mems)
            pred_hid = hidden[-tgt_len:]
            loss = self.crit(pred_hid.view(-1, pred_hid.size(-1)), target.view(-1))
            loss = loss.view(tgt_len, -1)
            if new_mems is None:
                return [loss]
            else:
                return [loss] + new_mems

    model = MemTransformerLM(N_TOKEN, N_LAYER, N_HEAD, D_MODEL, D_HEAD, D_INNER, dropout=0.0, dropatt=0.0,
                             div_val=div_val, tgt_len=TGT_LEN, ext_len=0, mem_len=MEM_LEN, cutoffs=list(cutoffs),
                             clamp_len=clamp_len, d_embed=D_MODEL if div_val == 1 else 2 * D_MODEL,
                             tie_weight=tie_weight, pre_lnorm=pre_lnorm)
    model.apply(weights_init(nn))
    model.word_emb.apply(weights_init(nn))
    return model


def weights_init(nn, init_range=0.1, init_std=0.02, proj_init_std=0.01):
    """train.py's ``weights_init`` (``--init normal``), picking modules by class name."""

    def init_weight(weight):
        nn.init.normal_(weight, 0.0, init_std * 10)  # 0.02 in train.py; wider so the attention is not uniform

    def init_bias(bias):
        nn.init.constant_(bias, 0.0)

    def apply(m):
        classname = m.__class__.__name__
        if classname.find("Linear") != -1:
            if hasattr(m, "weight") and m.weight is not None:
                init_weight(m.weight)
            if hasattr(m, "bias") and m.bias is not None:
                init_bias(m.bias)
        elif classname.find("AdaptiveEmbedding") != -1:
            if hasattr(m, "emb_projs"):
                for i in range(len(m.emb_projs)):
                    if m.emb_projs[i] is not None:
                        nn.init.normal_(m.emb_projs[i], 0.0, proj_init_std * 10)
        elif classname.find("Embedding") != -1:
            if hasattr(m, "weight"):
                init_weight(m.weight)
        elif classname.find("LayerNorm") != -1:
            if hasattr(m, "weight"):
                nn.init.normal_(m.weight, 1.0, init_std)
            if hasattr(m, "bias") and m.bias is not None:
                init_bias(m.bias)
        elif classname.find("TransformerLM") != -1:
            if hasattr(m, "r_w_bias"):
                init_weight(m.r_w_bias)
            if hasattr(m, "r_r_bias"):
                init_weight(m.r_r_bias)

    return apply


def _corpus(seed=0):
    """One token stream cut into ``SEGMENTS`` consecutive (data, target) segments, time-major ``(TGT_LEN, BATCH)``
    as LMOrderedIterator gives them."""
    rng = np.random.default_rng(seed)
    stream = rng.integers(0, N_TOKEN, (SEGMENTS * TGT_LEN + 1, BATCH))
    return [(stream[i:i + TGT_LEN], stream[i + 1:i + 1 + TGT_LEN]) for i in range(0, SEGMENTS * TGT_LEN, TGT_LEN)]


def _optimizer(torch, model, lr=5e-3, warmup_step=2, max_step=6):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max_step - warmup_step, eta_min=0.0)
    return optimizer, scheduler


def _schedule(optimizer, scheduler, train_step, lr=5e-3, warmup_step=2):
    """train.py: a linear warmup written into ``param_groups[0]['lr']``, then the cosine scheduler."""
    if train_step < warmup_step:
        optimizer.param_groups[0]["lr"] = lr * train_step / warmup_step
    else:
        scheduler.step()


def train_xl(clip=0.25):
    segments = _corpus()

    def train(torch, nn, F, model):
        optimizer, scheduler = _optimizer(torch, model)
        record = {"losses": [], "mems": []}
        mems = tuple()
        for train_step, (data, target) in enumerate(segments, start=1):
            model.zero_grad()
            ret = model(torch.tensor(data), torch.tensor(target), *mems)
            loss, mems = ret[0], ret[1:]
            loss = loss.float().mean().type_as(loss)
            loss.backward()
            record.setdefault("grads", gradients(model))
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            _schedule(optimizer, scheduler, train_step)
            record["losses"].append(loss.item())
            record["mems"].append([array(m) for m in mems])
            assert all(not m.requires_grad for m in mems)
        record["state"] = snapshot(model)
        return record

    return train


VARIANTS = {"one table": dict(), "pre-LayerNorm": dict(pre_lnorm=True), "adaptive embedding, clamp_len": dict(div_val=2, cutoffs=(5,), clamp_len=3, tie_weight=False)}
LOSS_IN_FLOAT32 = {"losses": dict(rtol=2.5e-7, atol=0)}
"""``loss.float().mean()``: the mean of 8 float32 numbers, summed in another order by torch's vectorised kernel
(kiln's is NumPy's, which is the float64 sum rounded more often): they may differ by an ulp of float32."""


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformer_xl_trains_with_memories_as_torch(variant, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: transformer_xl(torch, nn, F, **VARIANTS[variant]), train_xl())
    assert_same_records(ours, theirs, looser=LOSS_IN_FLOAT32)
    assert [m.shape for m in theirs["mems"][-1]] == [(MEM_LEN, BATCH, D_MODEL)] * (N_LAYER + 1)


def test_transformer_xl_compiled_step_as_torch(float64_default):
    """The step (zero_grad, the forward over ``cat([mems, w])``, backward, clip, Adam) compiled whole, the memories
    passed in and returned (the first call's are ``init_mems``' empties, a second trace then serves the rest)."""
    segments = _corpus()

    def train(torch, nn, F, model):
        optimizer, scheduler = _optimizer(torch, model)

        def train_step(data, target, *mems):
            model.zero_grad()
            ret = model(data, target, *mems)
            loss, new_mems = ret[0], ret[1:]
            loss = loss.float().mean().type_as(loss)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optimizer.step()
            return loss.detach(), new_mems

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        record, mems = {"losses": [], "mems": []}, tuple()
        for train_step_index, (data, target) in enumerate(segments, start=1):
            loss, mems = run(torch.tensor(data), torch.tensor(target), *mems)
            _schedule(optimizer, scheduler, train_step_index)
            record["losses"].append(loss.item())
            record["mems"].append([array(m) for m in mems])
        record["state"] = snapshot(model)
        return record

    ours, theirs = run_in_lockstep(transformer_xl, train)
    assert_same_records(ours, theirs, looser=LOSS_IN_FLOAT32)


def test_transformer_xl_float32_as_torch():
    """float32 at its level (1e-5, 2e-6), the state of ``r_net`` looser: the gradient of its last columns (the
    position encodings' slowest frequencies, ``cos(pos / 1000)`` nearly equal over the keys, which the softmax
    ignores) cancels to ~3e-9 with float32 noise ~2e-10 in both libraries, and Adam scales that noise to a step of the
    lr's size (its first gradients agree to 1e-9 absolute)."""
    require_torch()
    ours, theirs = run_in_lockstep(transformer_xl, train_xl())
    assert ours["state"]["r_w_bias"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-5, atol=2e-6, looser={"/state/layers.0.dec_attn.r_net": dict(atol=2e-4, rtol=0),
                                                                   "/state/layers.1.dec_attn.r_net": dict(atol=2e-4, rtol=0)})


def test_byte_attention_mask_is_refused_as_torch():
    """The original's ``.byte()`` mask: torch 2.x's ``masked_fill`` refuses a uint8 mask; kiln says the same."""
    torch = require_torch()
    for lib in (kiln, torch):
        score = lib.zeros(3, 5, 2)
        mask = lib.triu(score.new_ones(3, 5), diagonal=1 + 2).byte()[:, :, None]
        with pytest.raises((RuntimeError, TypeError), match="masked_fill_? only supports boolean masks, but got mask "
                                                            "with dtype (unsigned char|uint8)"):
            score.float().masked_fill(mask, -float("inf"))


def test_transformer_xl_evaluates_with_longer_memory_and_same_length_as_torch(float64_default):
    """eval.py's setting after a training step: ``model.reset_length(tgt_len=2, ext_len=0, mem_len=6)``,
    ``same_length=True`` (the mask also hides keys further back than ``mem_len``: ``torch.triu(all_ones, 1 + mlen) +
    torch.tril(all_ones, -mask_shift_len)`` as bool), ``model.eval()`` and ``torch.no_grad()`` over the segments."""
    segments = [(data[:2], target[:2]) for data, target in _corpus(seed=1)] * 2

    def evaluate(torch, nn, F, model):
        train_xl()(torch, nn, F, model)
        model.tgt_len, model.ext_len, model.mem_len, model.same_length = 2, 0, 6, True
        model.eval()
        record, mems = {"losses": [], "mems": {}}, tuple()
        with torch.no_grad():
            for index, (data, target) in enumerate(segments):
                ret = model(torch.tensor(data), torch.tensor(target), *mems)
                loss, mems = ret[0], ret[1:]
                record["losses"].append(loss.mean().item())
                record["mems"][f"segment {index}"] = {f"layer {i}": array(m) for i, m in enumerate(mems)}
        return record

    ours, theirs = run_in_lockstep(transformer_xl, evaluate)
    assert_same_records(ours, theirs)
    assert [m.shape[0] for m in theirs["mems"]["segment 5"].values()] == [6] * (N_LAYER + 1)
