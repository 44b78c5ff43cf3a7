"""Porting probe: Transformer-XL as kimiyoung/transformer-xl writes it (``e2e/transformer_xl_program.py``: the
``pytorch/mem_transformer.py`` model, ``utils/proj_adaptive_softmax.py``, ``data_utils.py``'s ``LMOrderedIterator`` and
``train.py``'s init, optimizer, schedule, ``train()`` and ``evaluate()``, written once, ``torch`` being torch or kiln),
trained on consecutive segments of one token stream with its memories, from kiln's initial weights, and compared
with torch 2.13 in float64 to 1e-10: first gradients, every step's loss, learning rate and memories, the state after
the steps, the validation and test losses; eagerly and with the training step compiled; float32 at its level.

- ``RelPartialLearnableMultiHeadAttn``: ``qkv_net`` on ``torch.cat([mems, w], 0)`` (``layer_norm`` first under
  ``pre_lnorm``), ``torch.chunk(.., 3, dim=-1)``, ``w_head_q[-qlen:]``, the old-style ``torch.einsum('ibnd,jbnd->ijbn',
  (rw_head_q, w_head_k))`` with a tuple of operands, ``r_w_bias``/``r_r_bias``, ``_rel_shift`` (``zero_pad =
  torch.zeros((x.size(0), 1, *x.size()[2:]), device=x.device, dtype=x.dtype)``, ``cat``, ``view`` to ``(klen + 1,
  qlen, ...)``, ``x_padded[1:].view_as(x)``), ``attn_score.mul_(self.scale)``, the mask applied as
  ``attn_score.float().masked_fill(attn_mask[None,:,:,None], -float('inf')).type_as(attn_score)`` (a float32 round
  trip even in float64) after ``attn_mask.any().item()``; ``PositionwiseFF`` with ``nn.ReLU(inplace=True)``, post- and
  pre-LayerNorm residuals. The absolute ``MultiHeadAttn`` (``attn_type`` 2, ``DecoderLayer``, ``word_emb +
  pos_emb[-qlen:]``) masks in place: ``attn_score.masked_fill_(attn_mask[None,:,:,None], -float('inf'))``.
- ``PositionalEmbedding``: ``register_buffer('inv_freq', 1 / (10000 ** (torch.arange(0.0, demb, 2.0) / demb)))``,
  ``torch.ger(pos_seq, self.inv_freq)``, ``pos_emb[:,None,:]``; ``torch.arange(klen-1, -1, -1.0, ...)`` and
  ``pos_seq.clamp_(max=self.clamp_len)``.
- ``AdaptiveEmbedding``: ``div_val`` 1 (one table, ``F.linear`` by ``emb_projs[0]`` when ``d_embed != d_model``) and 2
  (per-cluster tables ``d_embed // div_val ** i`` wide, ``mask_i.nonzero().squeeze()``, ``index_select``, ``F.linear``
  with ``nn.ParameterList`` projections, ``emb_flat.index_copy_(0, indices_i, emb_i)``), ``embed.mul_(self.emb_scale)``.
- ``ProjectedAdaptiveLogSoftmax``: no clusters (``out_projs`` holding ``None``: ``nn.ParameterList.append(None)``),
  two clusters with ``div_val`` 2 and one with ``div_val`` 1 (``out_layers[0].weight[l_idx:r_idx]``), the head's
  ``torch.cat([weight_i, self.cluster_weight])``, ``_compute_logit``'s ``F.linear(hidden, proj.t().contiguous())``,
  ``torch.zeros_like(target, dtype=hidden.dtype)``, ``nonzero().squeeze()`` (a 0-d index for a one-token cluster,
  skipped clusters), ``index_select``, ``gather(1, target_i[:,None])``, ``head_logprob_i[:, -i]``, and the two ways
  the nll is written: ``nll[offset:offset+n].copy_(-logprob_i)`` (as train.py runs it) and ``nll.index_copy_(0,
  indices_i, -logprob_i)`` (``keep_order``).
- ``MemTransformerLM``: ``tie_weight`` (``crit.out_layers[i].weight = word_emb.emb_layers[i].weight``), ``tie_projs``
  (``crit.out_projs[i] = word_emb.emb_projs[i]``, and ``emb_projs[0]`` for ``div_val`` 1: a ``ParameterList`` slot
  assigned another list's parameter), ``init_mems`` (``torch.empty(0)`` per layer, which ``torch.cat`` skips),
  ``_update_mems`` under ``torch.no_grad()`` (``cat[beg_idx:end_idx].detach()``, called with ``mlen, qlen`` swapped
  as the original does), ``dec_attn_mask = torch.triu(word_emb.new_ones(qlen, klen), diagonal=1+mlen)[:,:,None]`` and
  the ``same_length`` mask (``+ torch.tril(all_ones, -mask_shift_len)``), ``forward(data, target, *mems)`` returning
  ``[loss] + new_mems``, ``hidden[-tgt_len:]``, ``reset_length``.
- data_utils.py: ``Vocab.encode_file``'s ``torch.cat`` of ``torch.LongTensor(symbols)``, ``LMOrderedIterator``
  (``data.narrow(0, 0, n_step * bsz)``, ``data.view(bsz, -1).t().contiguous().to(device)``, ``get_batch``'s
  ``seq_len = min(bptt, data.size(0) - 1 - i)`` and slices, the fixed-length iterator).
- train.py: ``weights_init`` by class name under ``model.apply`` then ``model.word_emb.apply`` (``--init normal`` and
  ``uniform``, ``init_weight``/``init_bias``, ``proj_init_std`` for ``emb_projs``/``out_projs``, the cluster weights),
  ``args.n_all_param``, Adam, ``CosineAnnealingLR(optimizer, max_step, eta_min)``, the warmup written into
  ``optimizer.param_groups[0]['lr']`` and ``scheduler.step(train_step)`` after it (PyTorch's deprecated epoch
  argument: the closed form, with its warning), ``mems = tuple()`` carried across segments (one tuple a chunk with
  ``batch_chunk`` 2: ``torch.chunk(data, 2, 1)``, ``.contiguous()``, ``loss / batch_chunk``), ``loss.float().mean()
  .type_as(loss)``, ``train_loss += loss.float().item()``, ``clip_grad_norm_``, the log and eval intervals, and
  ``evaluate`` (``model.eval()``, ``reset_length(eval_tgt_len, ext_len, mem_len + tgt_len - eval_tgt_len)``,
  ``torch.no_grad()``, ``seq_len * loss.float().item()``, then ``model.train()``).

Upstream limits kept: the absolute attention adds ``pos_emb[:mlen]`` in place to the first layer's memory, which is
``init_mems``' ``torch.empty(0)`` at the first segment, and both libraries raise there (checked in
``test_transformer_xl_pieces_as_torch``): that variant trains with ``mem_len`` 0.

Adaptations: tiny sizes (20 tokens, 2 layers of 2 heads of 4, ``d_model`` 8, segments of 4 (2 in evaluation) over 2
columns, memories of 4, 6 steps); ``init_std`` 0.2 and ``proj_init_std`` 0.1 (train.py's 0.02 and 0.01 leave the
attention uniform at these sizes); ``.bool()`` masks where the original has ``.byte()`` (torch 2.x's ``masked_fill``
refuses a uint8 mask, and kiln does too, with torch's words: ``test_byte_attention_mask_is_refused_as_torch``); dropout
0 in the comparisons (one kiln test trains with dropout and dropatt on); ``crit.keep_order = True`` set on the model in
one variant (train.py leaves it False). Tolerance: the losses to 2.5e-7, as the original takes their mean in float32.

Compiled: ``train.py``'s loop body from ``model.zero_grad()`` through ``optimizer.step()`` as one function of ``(data,
target, *mems)`` returning the loss and the new memories, ``kiln.compile(fullgraph=True)``: two graphs for six segments
(the first segment's memories are ``init_mems``' empties, the later ones tensors), the warmup's
``param_groups[0]['lr']`` writes and ``scheduler.step(train_step)`` between calls (the lr is a graph input: no retrace).
With the adaptive embedding and softmax, each segment's ``nonzero()`` of its tokens fixes the graph's shapes, so kiln
traces each new segment (guarded on the tokens' values), where ``torch.compile`` (its default configuration, which does
not capture ops of data-dependent output shape) breaks the graph.

What broke (this probe, earlier): ``torch.cat([torch.empty(0), h], 0)`` (the initial mems) raised
(``tests/frontend/test_cat_legacy_empty_vs_torch.py``); ``index_select`` refused the 0-d index that
``nonzero().squeeze()`` gives for a cluster holding one token
(``tests/frontend/test_index_select_scalar_index_vs_torch.py``); ``attn_mask.any().item()`` stopped the compiled step,
though the mask is built from constants only (now known while tracing:
``tests/runtime/test_compiled_item_of_known_value.py``); the ``.byte()`` mask was refused with kiln's words, now torch's
(``tests/frontend/test_mask_dtype_errors_vs_torch.py``). Now: ``scheduler.step(train_step)`` raised a TypeError
(``LRScheduler.step`` took no epoch): it jumps to the epoch by the closed form with torch's deprecation warning
(``frontend/schedules_base.py``; ``tests/optim/test_scheduler_step_epoch_vs_torch.py``);
``nn.ParameterList.append(None)`` (the adaptive softmax's ``out_projs`` where no projection is needed) raised "holds
Parameters or numeric arrays": the list counts and indexes ``None`` as torch's does, and it is no parameter
(``frontend/containers.py``; ``tests/frontend/test_parameter_list_none_entries_vs_torch.py``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import kiln
from e2e.compiled_step_probes import counting
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.transformer_xl_program import TrainPy, make_args
from oracles import libraries, require_torch

N_TOKEN, STEPS, EVAL_BATCH = 20, 6, 2
INIT = dict(init_std=0.2, proj_init_std=0.1)
VARIANTS = {
    "one table": dict(),
    "pre-LayerNorm, uniform init, batch_chunk 2": dict(pre_lnorm=True, init="uniform", batch_chunk=2),
    "adaptive div_val 2, two clusters, tie_projs, clamp_len": dict(
        div_val=2, cutoffs=[8, 14], tie_projs=[False, True, True], clamp_len=3),
    "one cluster, projected div_val 1, tie_projs, keep_order": dict(
        d_embed=6, cutoffs=[10], tie_projs=[False, True], keep_order=True),
    "absolute attention (attn_type 2), no memory": dict(attn_type=2, mem_len=0),
}
T_CHUNKS = {"pre-LayerNorm, uniform init, batch_chunk 2": 2}
LOSS_IN_FLOAT32 = {"losses": dict(rtol=2.5e-7, atol=0), "train_loss": dict(rtol=2.5e-7, atol=0)}
"""``loss.float().mean()``: the mean of 8 float32 numbers, summed in another order by torch's vectorised kernel
(kiln's is NumPy's, which is the float64 sum rounded more often): they may differ by an ulp of float32."""


def sentences(seed: int, count: int) -> list[list[int]]:
    """Numbered sentences (what ``Vocab.encode_file`` reads), the frequent tokens low as in a sorted vocabulary."""
    rng = np.random.default_rng(seed)
    return [[int(t) for t in np.minimum(rng.geometric(0.15, rng.integers(3, 9)) - 1, N_TOKEN - 1)]
            for _ in range(count)]


def builder(**options):
    """``build`` for ``run_in_lockstep``: train.py's model (``model.apply(weights_init)``), its ``TrainPy`` kept on
    it."""

    def build(torch, nn, F):
        keep_order = options.get("keep_order", False)
        T = TrainPy(torch, nn, F, make_args(**INIT, **{k: v for k, v in options.items() if k != "keep_order"}))
        model = T.build(N_TOKEN)
        model.crit.keep_order = keep_order
        model.program = T
        return model

    return build


def iterators(T):
    """The train, valid and test iterators of one stream each (train.py's ``corpus.get_iterator``)."""
    args, M = T.args, T.M
    train, valid, test = (M.encode_file(sentences(seed, count)) for seed, count in ((0, 12), (1, 4), (2, 4)))
    return (M.LMOrderedIterator(train, args.batch_size, args.tgt_len, ext_len=args.ext_len),
            M.LMOrderedIterator(valid, EVAL_BATCH, args.eval_tgt_len, ext_len=args.ext_len),
            M.LMOrderedIterator(test, EVAL_BATCH, args.eval_tgt_len, ext_len=args.ext_len))


def train_py(torch, nn, F, model):
    """train.py's epoch (its evaluation every 3 steps) then the test evaluation, recorded."""
    T = model.program
    T.make_optimizer()
    tr_iter, va_iter, te_iter = iterators(T)
    record = {"losses": [], "lrs": [], "mems": [], "train_loss": []}

    def on_backward(batch):
        if batch == 0:
            record["grads"] = gradients(model)
        record["train_loss"].append(T.train_loss)

    def on_step(batch, loss, mems):
        record["losses"].append(loss.item())
        record["lrs"].append(T.optimizer.param_groups[0]["lr"])
        record["mems"].append([array(m) for chunk in (mems if T.args.batch_chunk > 1 else [mems]) for m in chunk])
        assert all(not m.requires_grad for chunk in (mems if T.args.batch_chunk > 1 else [mems]) for m in chunk)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The epoch parameter")
        T.train(tr_iter, va_iter, on_backward, on_step)
    assert T.train_step == STEPS and len(T.log) == 5
    record.update(state=snapshot(model), best_val_loss=T.best_val_loss, test_loss=T.evaluate(te_iter),
                  n_param=[T.args.n_all_param, T.args.n_nonemb_param])
    return record


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformer_xl_trains_as_torch(variant, float64_default):
    ours, theirs = run_in_lockstep(builder(**VARIANTS[variant]), train_py)
    assert_same_records(ours, theirs, looser=LOSS_IN_FLOAT32)
    memories = theirs["mems"][-1]
    assert [m.shape[0] for m in memories] == [4] * (0 if "no memory" in variant else 3 * T_CHUNKS.get(variant, 1))


def compiled_training(torch, nn, F, model):
    """The step compiled whole (``kiln.compile(fullgraph=True)`` in kiln, eager in torch) over six segments, the
    memories passed in and returned, the schedule between calls; the traces and kiln.compile's warnings counted."""
    T = model.program
    T.make_optimizer()
    traces, caught = [], []
    step = counting(T.train_step_fn(), traces)
    run = kiln.compile(step, fullgraph=True) if torch is kiln else step
    record, mems = {"losses": [], "lrs": [], "mems": []}, tuple()
    tr_iter, _, _ = iterators(T)
    for data, target, seq_len in tr_iter:
        with warnings.catch_warnings(record=True) as caught_now:
            warnings.simplefilter("always")
            loss, mems = run(data, target, *mems)
            T.schedule()
        caught += [str(w.message) for w in caught_now if "kiln.compile" in str(w.message)]
        record["losses"].append(loss.item())
        record["lrs"].append(T.optimizer.param_groups[0]["lr"])
        record["mems"].append([array(m) for m in mems])
        if T.train_step == STEPS:
            break
    record.update(state=snapshot(model), traces=len(traces), warnings=caught)
    return record


@pytest.mark.parametrize("variant, traces", [("one table", 4),
                                             ("adaptive div_val 2, two clusters, tie_projs, clamp_len", 8)])
def test_transformer_xl_compiled_step_as_torch(variant, traces, float64_default):
    """``traces`` counts the runs of the step's Python in kiln: the first call runs it twice (traced as a forward, it
    meets ``backward()`` and is traced again as a whole step), the second (memories now) twice (a symbolic memory
    length first, then the static shapes the trace asks for); the later calls run the graph, where the adaptive
    embedding and softmax trace each new segment once (their ``nonzero()`` of its tokens, guarded)."""
    ours, theirs = run_in_lockstep(builder(**VARIANTS[variant]), compiled_training)
    assert (ours.pop("traces"), theirs.pop("traces")) == (traces, STEPS)
    assert ours.pop("warnings") == theirs.pop("warnings") == []
    assert_same_records(ours, theirs, looser=LOSS_IN_FLOAT32)


def test_transformer_xl_float32_as_torch():
    """float32 at its level (1e-5, 2e-6), the state of ``r_net`` looser: the gradient of its last columns (the
    position encodings' slowest frequencies, ``cos(pos / 1000)`` nearly equal over the keys, which the softmax
    ignores) cancels to ~3e-9 with float32 noise ~2e-10 in both libraries, and Adam scales that noise to a step of the
    lr's size (its first gradients agree to 1e-9 absolute)."""
    require_torch()
    ours, theirs = run_in_lockstep(builder(**VARIANTS["adaptive div_val 2, two clusters, tie_projs, clamp_len"]),
                                   train_py)
    assert ours["state"]["r_w_bias"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-5, atol=2e-6, looser={".dec_attn.r_net": dict(atol=2e-4, rtol=0)})


def test_byte_attention_mask_is_refused_as_torch():
    """The original's ``.byte()`` mask: torch 2.x's ``masked_fill`` refuses a uint8 mask; kiln says the same."""
    torch = require_torch()
    for lib in (kiln, torch):
        score = lib.zeros(3, 5, 2)
        mask = lib.triu(score.new_ones(3, 5), diagonal=1 + 2).byte()[:, :, None]
        with pytest.raises((RuntimeError, TypeError), match="masked_fill_? only supports boolean masks, but got mask "
                                                            "with dtype (unsigned char|uint8)"):
            score.float().masked_fill(mask, -float("inf"))


def test_transformer_xl_evaluates_with_same_length_as_torch(float64_default):
    """eval.py's setting after training: ``same_length=True`` (the mask also hides keys further back than ``mem_len``),
    ``reset_length(tgt_len=2, ext_len=0, mem_len=6)`` by ``evaluate``, over a longer stream."""

    def evaluate(torch, nn, F, model):
        record = train_py(torch, nn, F, model)
        T = model.program
        T.model.same_length = True
        test = T.M.encode_file(sentences(3, 8))
        record["same_length_loss"] = T.evaluate(T.M.LMOrderedIterator(test, EVAL_BATCH, T.args.eval_tgt_len))
        return record

    ours, theirs = run_in_lockstep(builder(), evaluate)
    assert_same_records(ours, theirs, looser=LOSS_IN_FLOAT32)


def test_transformer_xl_trains_with_dropout_in_kiln():
    """Dropout 0.1 and dropatt 0.1 (kiln's own draws, not compared): the training mode draws, ``evaluate``'s
    ``model.eval()`` does not, and two epochs (12 steps at lr 1e-2) lower the loss on the training stream."""
    kiln.manual_seed(0)
    T = TrainPy(kiln, kiln.nn, kiln.nn.functional, make_args(
        **INIT, **VARIANTS["adaptive div_val 2, two clusters, tie_projs, clamp_len"], dropout=0.1, dropatt=0.1,
        lr=1e-2, max_step=12, warmup_step=1, eval_interval=100))
    model = T.build(N_TOKEN)
    T.make_optimizer()
    tr_iter, va_iter, _ = iterators(T)
    seen = T.M.LMOrderedIterator(T.M.encode_file(sentences(0, 12)), EVAL_BATCH, T.args.eval_tgt_len)
    data, target, _ = tr_iter.get_batch(0)
    assert model(data, target)[0].mean().item() != model(data, target)[0].mean().item()
    before = T.evaluate(seen)
    assert T.evaluate(seen) == before and model.training
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The epoch parameter")
        for _ in range(2):
            T.train(tr_iter, va_iter)
    assert T.train_step == 12
    assert all(math.isfinite(float(line.split("loss")[1].split("|")[0])) for line in T.log)
    assert T.evaluate(seen) < before - 0.05


def test_transformer_xl_pieces_as_torch(float64_default):
    """What train.py does not reach: ``PositionalEmbedding(pos_seq, bsz)`` (``pos_emb[:,None,:].expand(-1, bsz, -1)``),
    ``_rel_shift(x, zero_triu=True)`` (``x * torch.tril(ones, klen - qlen)[:,:,None,None]``), the adaptive softmax
    called with ``keep_order=True`` and with mismatched sizes, and the absolute attention (``attn_type`` 2) with
    memories, whose first segment adds ``pos_emb[:0]`` in place to ``init_mems``' ``torch.empty(0)``: both libraries
    raise there (``mems_i += pos_emb[:mlen]``), so the original trains that type without memories."""
    rng = np.random.default_rng(5)
    scores, hidden, target = rng.standard_normal((3, 5, 2, 2)), rng.standard_normal((6, 8)), rng.integers(0, 20, 6)
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        M = TrainPy(torch, nn, F, make_args()).M
        record = {"pos_emb": array(M.PositionalEmbedding(8)(torch.arange(4, -1, -1.0), bsz=3))}
        attention = M.RelPartialLearnableMultiHeadAttn(2, 8, 4, 0.0)
        record["shifted"] = {str(zero_triu): array(attention._rel_shift(torch.tensor(scores), zero_triu=zero_triu))
                             for zero_triu in (False, True)}
        crit, draws = M.ProjectedAdaptiveLogSoftmax(20, 8, 8, [8, 14], div_val=2), np.random.default_rng(6)
        with torch.no_grad():
            for p in crit.parameters():
                p.copy_(torch.tensor(draws.standard_normal(tuple(p.shape))))
        record["nll"] = {str(keep): array(crit(torch.tensor(hidden), torch.tensor(target), keep_order=keep))
                         for keep in (False, True)}
        with pytest.raises(RuntimeError, match="Input and target should have the same size in the batch dimension"):
            crit(torch.tensor(hidden), torch.tensor(target[:5]))
        T = TrainPy(torch, nn, F, make_args(attn_type=2))
        model = T.build(N_TOKEN)
        with pytest.raises(Exception, match="must match the size of tensor b"):
            model(torch.tensor(target.reshape(3, 2)), torch.tensor(target.reshape(3, 2)))
        records.append(record)
    assert_same_records(records[0], records[1])
    assert not np.array_equal(records[0]["nll"]["False"], records[0]["nll"]["True"])
