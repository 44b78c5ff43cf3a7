"""Transformer-XL: kimiyoung/transformer-xl's ``pytorch/mem_transformer.py`` (attn_type 0: ``PositionalEmbedding``,
``PositionwiseFF``, ``RelMultiHeadAttn._rel_shift``, ``RelPartialLearnableMultiHeadAttn``,
``RelPartialLearnableDecoderLayer``, ``AdaptiveEmbedding``, ``MemTransformerLM``; attn_type 2: ``MultiHeadAttn``,
``DecoderLayer``), ``pytorch/utils/proj_adaptive_softmax.py`` (``ProjectedAdaptiveLogSoftmax``),
``pytorch/data_utils.py`` (``LMOrderedIterator``, ``Vocab.encode_file``'s ``torch.cat`` of ``torch.LongTensor``
sentences) and ``pytorch/train.py`` (``weights_init``, Adam with the linear warmup and ``CosineAnnealingLR``,
``train()``, ``evaluate()``), for ``torch`` being torch or kiln: the program of ``test_porting_probes_transformer_xl.py``,
whose docstring says what it covers.

Adaptations: the classes are built by ``transformer_xl(torch, nn, F)``; train.py's globals (``args``, ``train_step``,
``train_loss``, ...) live in ``TrainPy`` (one attribute each), its ``logging(...)`` lines go to ``self.log``;
``dec_attn_mask`` is ``.bool()`` where the original has ``.byte()`` (torch 2.x's ``masked_fill`` refuses uint8 masks).
The attention types 1 and 3, the sampled softmax, fp16 and multi-GPU paths are left out."""

from __future__ import annotations

import math
from types import SimpleNamespace


def transformer_xl(torch, nn, F):
    """mem_transformer.py's and proj_adaptive_softmax.py's classes, data_utils.py's ``LMOrderedIterator``."""

    class PositionalEmbedding(nn.Module):
        def __init__(self, demb):
            super(PositionalEmbedding, self).__init__()

            self.demb = demb

            inv_freq = 1 / (10000 ** (torch.arange(0.0, demb, 2.0) / demb))
            self.register_buffer('inv_freq', inv_freq)

        def forward(self, pos_seq, bsz=None):
            sinusoid_inp = torch.ger(pos_seq, self.inv_freq)
            pos_emb = torch.cat([sinusoid_inp.sin(), sinusoid_inp.cos()], dim=-1)

            if bsz is not None:
                return pos_emb[:,None,:].expand(-1, bsz, -1)
            else:
                return pos_emb[:,None,:]

    class PositionwiseFF(nn.Module):
        def __init__(self, d_model, d_inner, dropout, pre_lnorm=False):
            super(PositionwiseFF, self).__init__()

            self.d_model = d_model
            self.d_inner = d_inner
            self.dropout = dropout

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
                ##### layer normalization + positionwise feed-forward
                core_out = self.CoreNet(self.layer_norm(inp))

                ##### residual connection
                output = core_out + inp
            else:
                ##### positionwise feed-forward
                core_out = self.CoreNet(inp)

                ##### residual connection + layer normalization
                output = self.layer_norm(inp + core_out)

            return output

    class MultiHeadAttn(nn.Module):
        def __init__(self, n_head, d_model, d_head, dropout, dropatt=0,
                     pre_lnorm=False):
            super(MultiHeadAttn, self).__init__()

            self.n_head = n_head
            self.d_model = d_model
            self.d_head = d_head
            self.dropout = dropout

            self.q_net = nn.Linear(d_model, n_head * d_head, bias=False)
            self.kv_net = nn.Linear(d_model, 2 * n_head * d_head, bias=False)

            self.drop = nn.Dropout(dropout)
            self.dropatt = nn.Dropout(dropatt)
            self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)

            self.layer_norm = nn.LayerNorm(d_model)

            self.scale = 1 / (d_head ** 0.5)

            self.pre_lnorm = pre_lnorm

        def forward(self, h, attn_mask=None, mems=None):
            ##### multihead attention
            # [hlen x bsz x n_head x d_head]

            if mems is not None:
                c = torch.cat([mems, h], 0)
            else:
                c = h

            if self.pre_lnorm:
                ##### layer normalization
                c = self.layer_norm(c)

            head_q = self.q_net(h)
            head_k, head_v = torch.chunk(self.kv_net(c), 2, -1)

            head_q = head_q.view(h.size(0), h.size(1), self.n_head, self.d_head)
            head_k = head_k.view(c.size(0), c.size(1), self.n_head, self.d_head)
            head_v = head_v.view(c.size(0), c.size(1), self.n_head, self.d_head)

            # [qlen x klen x bsz x n_head]
            attn_score = torch.einsum('ibnd,jbnd->ijbn', (head_q, head_k))
            attn_score.mul_(self.scale)
            if attn_mask is not None and attn_mask.any().item():
                if attn_mask.dim() == 2:
                    attn_score.masked_fill_(attn_mask[None,:,:,None], -float('inf'))
                elif attn_mask.dim() == 3:
                    attn_score.masked_fill_(attn_mask[:,:,:,None], -float('inf'))

            # [qlen x klen x bsz x n_head]
            attn_prob = F.softmax(attn_score, dim=1)
            attn_prob = self.dropatt(attn_prob)

            # [qlen x klen x bsz x n_head] + [klen x bsz x n_head x d_head] -> [qlen x bsz x n_head x d_head]
            attn_vec = torch.einsum('ijbn,jbnd->ibnd', (attn_prob, head_v))
            attn_vec = attn_vec.contiguous().view(
                attn_vec.size(0), attn_vec.size(1), self.n_head * self.d_head)

            ##### linear projection
            attn_out = self.o_net(attn_vec)
            attn_out = self.drop(attn_out)

            if self.pre_lnorm:
                ##### residual connection
                output = h + attn_out
            else:
                ##### residual connection + layer normalization
                output = self.layer_norm(h + attn_out)

            return output

    class RelMultiHeadAttn(nn.Module):
        def __init__(self, n_head, d_model, d_head, dropout, dropatt=0,
                     tgt_len=None, ext_len=None, mem_len=None, pre_lnorm=False):
            super(RelMultiHeadAttn, self).__init__()

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
            zero_pad = torch.zeros((x.size(0), 1, *x.size()[2:]),
                                   device=x.device, dtype=x.dtype)
            x_padded = torch.cat([zero_pad, x], dim=1)

            x_padded = x_padded.view(x.size(1) + 1, x.size(0), *x.size()[2:])

            x = x_padded[1:].view_as(x)

            if zero_triu:
                ones = torch.ones((x.size(0), x.size(1)))
                x = x * torch.tril(ones, x.size(1) - x.size(0))[:,:,None,None]

            return x

        def forward(self, w, r, attn_mask=None, mems=None):
            raise NotImplementedError

    class RelPartialLearnableMultiHeadAttn(RelMultiHeadAttn):
        def __init__(self, *args, **kwargs):
            super(RelPartialLearnableMultiHeadAttn, self).__init__(*args, **kwargs)

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

            w_head_q = w_head_q.view(qlen, bsz, self.n_head, self.d_head)           # qlen x bsz x n_head x d_head
            w_head_k = w_head_k.view(klen, bsz, self.n_head, self.d_head)           # qlen x bsz x n_head x d_head
            w_head_v = w_head_v.view(klen, bsz, self.n_head, self.d_head)           # qlen x bsz x n_head x d_head

            r_head_k = r_head_k.view(rlen, self.n_head, self.d_head)                # qlen x n_head x d_head

            #### compute attention score
            rw_head_q = w_head_q + r_w_bias                                         # qlen x bsz x n_head x d_head
            AC = torch.einsum('ibnd,jbnd->ijbn', (rw_head_q, w_head_k))             # qlen x klen x bsz x n_head

            rr_head_q = w_head_q + r_r_bias
            BD = torch.einsum('ibnd,jnd->ijbn', (rr_head_q, r_head_k))              # qlen x klen x bsz x n_head
            BD = self._rel_shift(BD)

            # [qlen x klen x bsz x n_head]
            attn_score = AC + BD
            attn_score.mul_(self.scale)

            #### compute attention probability
            if attn_mask is not None and attn_mask.any().item():
                if attn_mask.dim() == 2:
                    attn_score = attn_score.float().masked_fill(
                        attn_mask[None,:,:,None], -float('inf')).type_as(attn_score)
                elif attn_mask.dim() == 3:
                    attn_score = attn_score.float().masked_fill(
                        attn_mask[:,:,:,None], -float('inf')).type_as(attn_score)

            # [qlen x klen x bsz x n_head]
            attn_prob = F.softmax(attn_score, dim=1)
            attn_prob = self.dropatt(attn_prob)

            #### compute attention vector
            attn_vec = torch.einsum('ijbn,jbnd->ibnd', (attn_prob, w_head_v))

            # [qlen x bsz x n_head x d_head]
            attn_vec = attn_vec.contiguous().view(
                attn_vec.size(0), attn_vec.size(1), self.n_head * self.d_head)

            ##### linear projection
            attn_out = self.o_net(attn_vec)
            attn_out = self.drop(attn_out)

            if self.pre_lnorm:
                ##### residual connection
                output = w + attn_out
            else:
                ##### residual connection + layer normalization
                output = self.layer_norm(w + attn_out)

            return output

    class DecoderLayer(nn.Module):
        def __init__(self, n_head, d_model, d_head, d_inner, dropout, **kwargs):
            super(DecoderLayer, self).__init__()

            self.dec_attn = MultiHeadAttn(n_head, d_model, d_head, dropout, **kwargs)
            self.pos_ff = PositionwiseFF(d_model, d_inner, dropout,
                                         pre_lnorm=kwargs.get('pre_lnorm'))

        def forward(self, dec_inp, dec_attn_mask=None, mems=None):

            output = self.dec_attn(dec_inp, attn_mask=dec_attn_mask,
                                   mems=mems)
            output = self.pos_ff(output)

            return output

    class RelPartialLearnableDecoderLayer(nn.Module):
        def __init__(self, n_head, d_model, d_head, d_inner, dropout,
                     **kwargs):
            super(RelPartialLearnableDecoderLayer, self).__init__()

            self.dec_attn = RelPartialLearnableMultiHeadAttn(n_head, d_model,
                                d_head, dropout, **kwargs)
            self.pos_ff = PositionwiseFF(d_model, d_inner, dropout,
                                         pre_lnorm=kwargs.get('pre_lnorm'))

        def forward(self, dec_inp, r, r_w_bias, r_r_bias, dec_attn_mask=None, mems=None):

            output = self.dec_attn(dec_inp, r, r_w_bias, r_r_bias,
                                   attn_mask=dec_attn_mask,
                                   mems=mems)
            output = self.pos_ff(output)

            return output

    class AdaptiveEmbedding(nn.Module):
        def __init__(self, n_token, d_embed, d_proj, cutoffs, div_val=1,
                     sample_softmax=False):
            super(AdaptiveEmbedding, self).__init__()

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
                self.emb_layers.append(
                    nn.Embedding(n_token, d_embed, sparse=sample_softmax>0)
                )
                if d_proj != d_embed:
                    self.emb_projs.append(nn.Parameter(torch.Tensor(d_proj, d_embed)))
            else:
                for i in range(len(self.cutoffs)):
                    l_idx, r_idx = self.cutoff_ends[i], self.cutoff_ends[i+1]
                    d_emb_i = d_embed // (div_val ** i)
                    self.emb_layers.append(nn.Embedding(r_idx-l_idx, d_emb_i))
                    self.emb_projs.append(nn.Parameter(torch.Tensor(d_proj, d_emb_i)))

        def forward(self, inp):
            if self.div_val == 1:
                embed = self.emb_layers[0](inp)
                if self.d_proj != self.d_embed:
                    embed  = F.linear(embed, self.emb_projs[0])
            else:
                param = next(self.parameters())
                inp_flat = inp.view(-1)
                emb_flat = torch.zeros([inp_flat.size(0), self.d_proj],
                    dtype=param.dtype, device=param.device)
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

    class ProjectedAdaptiveLogSoftmax(nn.Module):
        def __init__(self, n_token, d_embed, d_proj, cutoffs, div_val=1,
                     keep_order=False):
            super(ProjectedAdaptiveLogSoftmax, self).__init__()

            self.n_token = n_token
            self.d_embed = d_embed
            self.d_proj = d_proj

            self.cutoffs = cutoffs + [n_token]
            self.cutoff_ends = [0] + self.cutoffs
            self.div_val = div_val

            self.shortlist_size = self.cutoffs[0]
            self.n_clusters = len(self.cutoffs) - 1
            self.head_size = self.shortlist_size + self.n_clusters

            if self.n_clusters > 0:
                self.cluster_weight = nn.Parameter(torch.zeros(self.n_clusters, self.d_embed))
                self.cluster_bias = nn.Parameter(torch.zeros(self.n_clusters))

            self.out_layers = nn.ModuleList()
            self.out_projs = nn.ParameterList()

            if div_val == 1:
                for i in range(len(self.cutoffs)):
                    if d_proj != d_embed:
                        self.out_projs.append(
                            nn.Parameter(torch.Tensor(d_proj, d_embed))
                        )
                    else:
                        self.out_projs.append(None)

                self.out_layers.append(nn.Linear(d_embed, n_token))
            else:
                for i in range(len(self.cutoffs)):
                    l_idx, r_idx = self.cutoff_ends[i], self.cutoff_ends[i+1]
                    d_emb_i = d_embed // (div_val ** i)

                    self.out_projs.append(
                        nn.Parameter(torch.Tensor(d_proj, d_emb_i))
                    )

                    self.out_layers.append(nn.Linear(d_emb_i, r_idx-l_idx))

            self.keep_order = keep_order

        def _compute_logit(self, hidden, weight, bias, proj):
            if proj is None:
                logit = F.linear(hidden, weight, bias=bias)
            else:
                # if CUDA_MAJOR <= 9 and CUDA_MINOR <= 1:
                proj_hid = F.linear(hidden, proj.t().contiguous())
                logit = F.linear(proj_hid, weight, bias=bias)
                # else:
                #     logit = torch.einsum('bd,de,ev->bv', (hidden, proj, weight.t()))
                #     if bias is not None:
                #         logit = logit + bias

            return logit

        def forward(self, hidden, target, keep_order=False):
            '''
                hidden :: [len*bsz x d_proj]
                target :: [len*bsz]
            '''

            if hidden.size(0) != target.size(0):
                raise RuntimeError('Input and target should have the same size '
                                   'in the batch dimension.')

            if self.n_clusters == 0:
                logit = self._compute_logit(hidden, self.out_layers[0].weight,
                                            self.out_layers[0].bias, self.out_projs[0])
                nll = -F.log_softmax(logit, dim=-1) \
                        .gather(1, target.unsqueeze(1)).squeeze(1)
            else:
                # construct weights and biases
                weights, biases = [], []
                for i in range(len(self.cutoffs)):
                    if self.div_val == 1:
                        l_idx, r_idx = self.cutoff_ends[i], self.cutoff_ends[i + 1]
                        weight_i = self.out_layers[0].weight[l_idx:r_idx]
                        bias_i = self.out_layers[0].bias[l_idx:r_idx]
                    else:
                        weight_i = self.out_layers[i].weight
                        bias_i = self.out_layers[i].bias

                    if i == 0:
                        weight_i = torch.cat(
                            [weight_i, self.cluster_weight], dim=0)
                        bias_i = torch.cat(
                            [bias_i, self.cluster_bias], dim=0)

                    weights.append(weight_i)
                    biases.append(bias_i)

                head_weight, head_bias, head_proj = weights[0], biases[0], self.out_projs[0]

                head_logit = self._compute_logit(hidden, head_weight, head_bias, head_proj)
                head_logprob = F.log_softmax(head_logit, dim=1)

                nll = torch.zeros_like(target,
                        dtype=hidden.dtype, device=hidden.device)

                offset = 0
                cutoff_values = [0] + self.cutoffs
                for i in range(len(cutoff_values) - 1):
                    l_idx, r_idx = cutoff_values[i], cutoff_values[i + 1]

                    mask_i = (target >= l_idx) & (target < r_idx)
                    indices_i = mask_i.nonzero().squeeze()

                    if indices_i.numel() == 0:
                        continue

                    target_i = target.index_select(0, indices_i) - l_idx
                    head_logprob_i = head_logprob.index_select(0, indices_i)

                    if i == 0:
                        logprob_i = head_logprob_i.gather(1, target_i[:,None]).squeeze(1)
                    else:
                        weight_i, bias_i, proj_i = weights[i], biases[i], self.out_projs[i]

                        hidden_i = hidden.index_select(0, indices_i)

                        tail_logit_i = self._compute_logit(hidden_i, weight_i, bias_i, proj_i)
                        tail_logprob_i = F.log_softmax(tail_logit_i, dim=1)

                        logprob_i = head_logprob_i[:, -i] \
                                  + tail_logprob_i.gather(1, target_i[:,None]).squeeze(1)

                    if (hasattr(self, 'keep_order') and self.keep_order) or keep_order:
                        nll.index_copy_(0, indices_i, -logprob_i)
                    else:
                        nll[offset:offset+logprob_i.size(0)].copy_(-logprob_i)

                    offset += logprob_i.size(0)

            return nll

    class MemTransformerLM(nn.Module):
        def __init__(self, n_token, n_layer, n_head, d_model, d_head, d_inner,
                     dropout, dropatt, tie_weight=True, d_embed=None,
                     div_val=1, tie_projs=[False], pre_lnorm=False,
                     tgt_len=None, ext_len=None, mem_len=None,
                     cutoffs=[], adapt_inp=False,
                     same_length=False, attn_type=0, clamp_len=-1,
                     sample_softmax=-1):
            super(MemTransformerLM, self).__init__()
            self.n_token = n_token

            d_embed = d_model if d_embed is None else d_embed
            self.d_embed = d_embed
            self.d_model = d_model
            self.n_head = n_head
            self.d_head = d_head

            self.word_emb = AdaptiveEmbedding(n_token, d_embed, d_model, cutoffs,
                                              div_val=div_val)

            self.drop = nn.Dropout(dropout)

            self.n_layer = n_layer

            self.tgt_len = tgt_len
            self.mem_len = mem_len
            self.ext_len = ext_len
            self.max_klen = tgt_len + ext_len + mem_len

            self.attn_type = attn_type

            self.layers = nn.ModuleList()
            if attn_type == 0: # the default attention
                for i in range(n_layer):
                    self.layers.append(
                        RelPartialLearnableDecoderLayer(
                            n_head, d_model, d_head, d_inner, dropout,
                            tgt_len=tgt_len, ext_len=ext_len, mem_len=mem_len,
                            dropatt=dropatt, pre_lnorm=pre_lnorm)
                    )
            elif attn_type in [2, 3]: # absolute embeddings
                for i in range(n_layer):
                    self.layers.append(
                        DecoderLayer(
                            n_head, d_model, d_head, d_inner, dropout,
                            dropatt=dropatt, pre_lnorm=pre_lnorm)
                    )

            self.sample_softmax = sample_softmax
            # use adaptive softmax (including standard softmax)
            self.crit = ProjectedAdaptiveLogSoftmax(n_token, d_embed, d_model,
                                                    cutoffs, div_val=div_val)

            if tie_weight:
                for i in range(len(self.crit.out_layers)):
                    self.crit.out_layers[i].weight = self.word_emb.emb_layers[i].weight

            if tie_projs:
                for i, tie_proj in enumerate(tie_projs):
                    if tie_proj and div_val == 1 and d_model != d_embed:
                        self.crit.out_projs[i] = self.word_emb.emb_projs[0]
                    elif tie_proj and div_val != 1:
                        self.crit.out_projs[i] = self.word_emb.emb_projs[i]

            self.same_length = same_length
            self.clamp_len = clamp_len

            self._create_params()

        def backward_compatible(self):
            self.sample_softmax = -1

        def _create_params(self):
            if self.attn_type == 0: # default attention
                self.pos_emb = PositionalEmbedding(self.d_model)
                self.r_w_bias = nn.Parameter(torch.Tensor(self.n_head, self.d_head))
                self.r_r_bias = nn.Parameter(torch.Tensor(self.n_head, self.d_head))
            elif self.attn_type == 2: # absolute standard
                self.pos_emb = PositionalEmbedding(self.d_model)

        def reset_length(self, tgt_len, ext_len, mem_len):
            self.tgt_len = tgt_len
            self.mem_len = mem_len
            self.ext_len = ext_len

        def init_mems(self):
            if self.mem_len > 0:
                mems = []
                param = next(self.parameters())
                for i in range(self.n_layer+1):
                    empty = torch.empty(0, dtype=param.dtype, device=param.device)
                    mems.append(empty)

                return mems
            else:
                return None

        def _update_mems(self, hids, mems, qlen, mlen):
            # does not deal with None
            if mems is None: return None

            # mems is not None
            assert len(hids) == len(mems), 'len(hids) != len(mems)'

            # There are `mlen + qlen` steps that can be cached into mems
            # For the next step, the last `ext_len` of the `qlen` tokens
            # will be used as the extended context. Hence, we only cache
            # the tokens from `mlen + qlen - self.ext_len - self.mem_len`
            # to `mlen + qlen - self.ext_len`.
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
                dec_attn_mask = (torch.triu(all_ones, 1+mlen)
                        + torch.tril(all_ones, -mask_shift_len)).bool()[:, :, None] # -1
            else:
                dec_attn_mask = torch.triu(
                    word_emb.new_ones(qlen, klen), diagonal=1+mlen).bool()[:,:,None]

            hids = []
            if self.attn_type == 0: # default
                pos_seq = torch.arange(klen-1, -1, -1.0, device=word_emb.device,
                                       dtype=word_emb.dtype)
                if self.clamp_len > 0:
                    pos_seq.clamp_(max=self.clamp_len)
                pos_emb = self.pos_emb(pos_seq)

                core_out = self.drop(word_emb)
                pos_emb = self.drop(pos_emb)

                hids.append(core_out)
                for i, layer in enumerate(self.layers):
                    mems_i = None if mems is None else mems[i]
                    core_out = layer(core_out, pos_emb, self.r_w_bias,
                            self.r_r_bias, dec_attn_mask=dec_attn_mask, mems=mems_i)
                    hids.append(core_out)
            elif self.attn_type == 2: # absolute
                pos_seq = torch.arange(klen - 1, -1, -1.0, device=word_emb.device,
                                       dtype=word_emb.dtype)
                if self.clamp_len > 0:
                    pos_seq.clamp_(max=self.clamp_len)
                pos_emb = self.pos_emb(pos_seq)

                core_out = self.drop(word_emb + pos_emb[-qlen:])

                hids.append(core_out)
                for i, layer in enumerate(self.layers):
                    mems_i = None if mems is None else mems[i]
                    if mems_i is not None and i == 0:
                        mems_i += pos_emb[:mlen]
                    core_out = layer(core_out, dec_attn_mask=dec_attn_mask,
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
            if not mems: mems = self.init_mems()

            tgt_len = target.size(0)
            hidden, new_mems = self._forward(data, mems=mems)

            pred_hid = hidden[-tgt_len:]
            loss = self.crit(pred_hid.view(-1, pred_hid.size(-1)), target.view(-1))
            loss = loss.view(tgt_len, -1)

            if new_mems is None:
                return [loss]
            else:
                return [loss] + new_mems

    class LMOrderedIterator(object):
        def __init__(self, data, bsz, bptt, device='cpu', ext_len=None):
            """
                data -- LongTensor -- the LongTensor is strictly ordered
            """
            self.bsz = bsz
            self.bptt = bptt
            self.ext_len = ext_len if ext_len is not None else 0

            self.device = device

            # Work out how cleanly we can divide the dataset into bsz parts.
            self.n_step = data.size(0) // bsz

            # Trim off any extra elements that wouldn't cleanly fit (remainders).
            data = data.narrow(0, 0, self.n_step * bsz)

            # Evenly divide the data across the bsz batches.
            self.data = data.view(bsz, -1).t().contiguous().to(device)

            # Number of mini-batches
            self.n_batch = (self.n_step + self.bptt - 1) // self.bptt

        def get_batch(self, i, bptt=None):
            if bptt is None: bptt = self.bptt
            seq_len = min(bptt, self.data.size(0) - 1 - i)

            end_idx = i + seq_len
            beg_idx = max(0, i - self.ext_len)

            data = self.data[beg_idx:end_idx]
            target = self.data[i+1:i+1+seq_len]

            return data, target, seq_len

        def get_fixlen_iter(self, start=0):
            for i in range(start, self.data.size(0) - 1, self.bptt):
                yield self.get_batch(i)

        def __iter__(self):
            return self.get_fixlen_iter()

    def encode_file(sentences):
        """``Vocab.encode_file(path, ordered=True)`` of already-numbered sentences: ``convert_to_tensor`` of each
        (``torch.LongTensor(self.get_indices(symbols))``), then ``torch.cat(encoded)``."""
        encoded = []
        for symbols in sentences:
            encoded.append(torch.LongTensor(symbols))
        encoded = torch.cat(encoded)
        return encoded

    return SimpleNamespace(**{name: value for name, value in locals().items() if name not in ("torch", "nn", "F")})


class TrainPy:
    """train.py for ``torch`` (torch or kiln): its functions as methods, its globals as attributes."""

    def __init__(self, torch, nn, F, args):
        self.torch, self.nn, self.args = torch, nn, args
        self.M = transformer_xl(torch, nn, F)
        self.train_step, self.train_loss, self.best_val_loss = 0, 0, None
        self.log = []

    ###########################################################################
    # Build the model
    ###########################################################################
    def init_weight(self, weight):
        args, nn = self.args, self.nn
        if args.init == 'uniform':
            nn.init.uniform_(weight, -args.init_range, args.init_range)
        elif args.init == 'normal':
            nn.init.normal_(weight, 0.0, args.init_std)

    def init_bias(self, bias):
        self.nn.init.constant_(bias, 0.0)

    def weights_init(self, m):
        args, nn, init_weight, init_bias = self.args, self.nn, self.init_weight, self.init_bias
        classname = m.__class__.__name__
        if classname.find('Linear') != -1:
            if hasattr(m, 'weight') and m.weight is not None:
                init_weight(m.weight)
            if hasattr(m, 'bias') and m.bias is not None:
                init_bias(m.bias)
        elif classname.find('AdaptiveEmbedding') != -1:
            if hasattr(m, 'emb_projs'):
                for i in range(len(m.emb_projs)):
                    if m.emb_projs[i] is not None:
                        nn.init.normal_(m.emb_projs[i], 0.0, args.proj_init_std)
        elif classname.find('Embedding') != -1:
            if hasattr(m, 'weight'):
                init_weight(m.weight)
        elif classname.find('ProjectedAdaptiveLogSoftmax') != -1:
            if hasattr(m, 'cluster_weight') and m.cluster_weight is not None:
                init_weight(m.cluster_weight)
            if hasattr(m, 'cluster_bias') and m.cluster_bias is not None:
                init_bias(m.cluster_bias)
            if hasattr(m, 'out_projs'):
                for i in range(len(m.out_projs)):
                    if m.out_projs[i] is not None:
                        nn.init.normal_(m.out_projs[i], 0.0, args.proj_init_std)
        elif classname.find('LayerNorm') != -1:
            if hasattr(m, 'weight'):
                nn.init.normal_(m.weight, 1.0, args.init_std)
            if hasattr(m, 'bias') and m.bias is not None:
                init_bias(m.bias)
        elif classname.find('TransformerLM') != -1:
            if hasattr(m, 'r_emb'):
                init_weight(m.r_emb)
            if hasattr(m, 'r_w_bias'):
                init_weight(m.r_w_bias)
            if hasattr(m, 'r_r_bias'):
                init_weight(m.r_r_bias)
            if hasattr(m, 'r_bias'):
                init_bias(m.r_bias)

    def update_dropout(self, m):
        classname = m.__class__.__name__
        if classname.find('Dropout') != -1:
            if hasattr(m, 'p'):
                m.p = self.args.dropout

    def update_dropatt(self, m):
        if hasattr(m, 'dropatt'):
            m.dropatt.p = self.args.dropatt

    def build(self, ntokens):
        """The model (``model.apply(weights_init)``, the embedding again), Adam and the cosine scheduler."""
        args = self.args
        model = self.M.MemTransformerLM(ntokens, args.n_layer, args.n_head, args.d_model,
            args.d_head, args.d_inner, args.dropout, args.dropatt,
            tie_weight=args.tied, d_embed=args.d_embed, div_val=args.div_val,
            tie_projs=args.tie_projs, pre_lnorm=args.pre_lnorm, tgt_len=args.tgt_len,
            ext_len=args.ext_len, mem_len=args.mem_len, cutoffs=args.cutoffs,
            same_length=args.same_length, attn_type=args.attn_type,
            clamp_len=args.clamp_len, sample_softmax=args.sample_softmax)
        model.apply(self.weights_init)
        # ensure embedding init is not overridden by out_layer in case of weight sharing
        model.word_emb.apply(self.weights_init)
        args.n_all_param = sum([p.nelement() for p in model.parameters()])
        args.n_nonemb_param = sum([p.nelement() for p in model.layers.parameters()])
        self.model = self.para_model = model
        return model

    def make_optimizer(self):
        args, optim, model = self.args, self.torch.optim, self.model
        self.optimizer = optim.Adam(model.parameters(), lr=args.lr)
        # here we do not set eta_min to lr_min to be backward compatible
        # because in previous versions eta_min is default to 0
        # rather than the default value of lr_min 1e-6
        self.scheduler = optim.lr_scheduler.CosineAnnealingLR(self.optimizer,
            args.max_step, eta_min=args.eta_min) # should use eta_min arg
        return self.optimizer, self.scheduler

    ###########################################################################
    # Training code
    ###########################################################################
    def evaluate(self, eval_iter):
        args, model, torch = self.args, self.model, self.torch
        # Turn on evaluation mode which disables dropout.
        model.eval()

        # If the model does not use memory at all, make the ext_len longer.
        # Otherwise, make the mem_len longer and keep the ext_len the same.
        if args.mem_len == 0:
            model.reset_length(args.eval_tgt_len,
                args.ext_len+args.tgt_len-args.eval_tgt_len, args.mem_len)
        else:
            model.reset_length(args.eval_tgt_len,
                args.ext_len, args.mem_len+args.tgt_len-args.eval_tgt_len)

        # Evaluation
        total_len, total_loss = 0, 0.
        with torch.no_grad():
            mems = tuple()
            for i, (data, target, seq_len) in enumerate(eval_iter):
                if args.max_eval_steps > 0 and i >= args.max_eval_steps:
                    break
                ret = model(data, target, *mems)
                loss, mems = ret[0], ret[1:]
                loss = loss.mean()
                total_loss += seq_len * loss.float().item()
                total_len += seq_len

        # Switch back to the training mode
        model.reset_length(args.tgt_len, args.ext_len, args.mem_len)
        model.train()

        return total_loss / total_len

    def schedule(self):
        """train.py's step-wise learning rate annealing, after ``optimizer.step()``."""
        args, optimizer, scheduler = self.args, self.optimizer, self.scheduler
        self.train_step += 1
        if args.scheduler in ['cosine', 'constant', 'dev_perf']:
            # linear warmup stage
            if self.train_step < args.warmup_step:
                curr_lr = args.lr * self.train_step / args.warmup_step
                optimizer.param_groups[0]['lr'] = curr_lr
            else:
                if args.scheduler == 'cosine':
                    scheduler.step(self.train_step)

    def train(self, tr_iter, va_iter, on_backward=None, on_step=None):
        """train()'s epoch; ``on_backward(batch)`` after the backward pass and ``on_step(batch, loss, mems)`` after the
        learning rate's update are the probe's (its records)."""
        args, model, para_model, torch, optimizer = self.args, self.model, self.para_model, self.torch, self.optimizer
        # Turn on training mode which enables dropout.
        model.train()
        if args.batch_chunk > 1:
            mems = [tuple() for _ in range(args.batch_chunk)]
        else:
            mems = tuple()
        train_iter = tr_iter
        for batch, (data, target, seq_len) in enumerate(train_iter):
            model.zero_grad()
            if args.batch_chunk > 1:
                data_chunks = torch.chunk(data, args.batch_chunk, 1)
                target_chunks = torch.chunk(target, args.batch_chunk, 1)
                for i in range(args.batch_chunk):
                    data_i = data_chunks[i].contiguous()
                    target_i = target_chunks[i].contiguous()
                    ret = para_model(data_i, target_i, *mems[i])
                    loss, mems[i] = ret[0], ret[1:]
                    loss = loss.float().mean().type_as(loss) / args.batch_chunk
                    loss.backward()
                    self.train_loss += loss.float().item()
            else:
                ret = para_model(data, target, *mems)
                loss, mems = ret[0], ret[1:]
                loss = loss.float().mean().type_as(loss)
                loss.backward()
                self.train_loss += loss.float().item()
            if on_backward is not None:
                on_backward(batch)

            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)

            optimizer.step()

            # step-wise learning rate annealing
            self.schedule()
            if on_step is not None:
                on_step(batch, loss, mems)

            if self.train_step % args.log_interval == 0:
                cur_loss = self.train_loss / args.log_interval
                self.log.append('| epoch {:3d} step {:>8d} | {:>6d} batches | lr {:.3g} '
                                '| loss {:5.2f} | ppl {:9.3f}'.format(1, self.train_step, batch+1,
                                optimizer.param_groups[0]['lr'], cur_loss, math.exp(cur_loss)))
                self.train_loss = 0

            if self.train_step % args.eval_interval == 0:
                val_loss = self.evaluate(va_iter)
                self.log.append('| Eval {:3d} at step {:>8d} | valid loss {:5.2f} | valid ppl {:9.3f}'.format(
                    self.train_step // args.eval_interval, self.train_step, val_loss, math.exp(val_loss)))
                # Save the model if the validation loss is the best we've seen so far.
                if not self.best_val_loss or val_loss < self.best_val_loss:
                    self.best_val_loss = val_loss

            if self.train_step == args.max_step:
                break

    def train_step_fn(self):
        """train()'s loop body from ``model.zero_grad()`` to ``optimizer.step()`` as one function of ``(data, target,
        *mems)`` returning the loss and the new memories: what ``torch.compile`` users wrap."""
        args, model, para_model, torch, optimizer = self.args, self.model, self.para_model, self.torch, self.optimizer

        def train_step(data, target, *mems):
            model.zero_grad()
            ret = para_model(data, target, *mems)
            loss, mems = ret[0], ret[1:]
            loss = loss.float().mean().type_as(loss)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            return loss.detach(), mems

        return train_step


def make_args(**options):
    """train.py's argparse defaults (those the program reads), at tiny sizes."""
    args = dict(n_layer=2, n_head=2, d_head=4, d_embed=-1, d_model=8, d_inner=16, dropout=0.0, dropatt=0.0,
                init='normal', init_range=0.1, init_std=0.02, proj_init_std=0.01, optim='adam', lr=5e-3,
                scheduler='cosine', warmup_step=2, max_step=6, eta_min=0.0, clip=0.25, batch_size=2, batch_chunk=1,
                tgt_len=4, eval_tgt_len=2, ext_len=0, mem_len=4, not_tied=False, adaptive=False, div_val=1,
                pre_lnorm=False, same_length=False, attn_type=0, clamp_len=-1, sample_softmax=-1, max_eval_steps=-1,
                log_interval=2, eval_interval=3, cutoffs=[], tie_projs=[False])
    args.update(options)
    args = SimpleNamespace(**args)
    args.tied = not args.not_tied
    if args.d_embed < 0:
        args.d_embed = args.d_model
    return args
