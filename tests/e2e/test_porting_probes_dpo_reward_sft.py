"""Porting probe: preference and SFT training as huggingface/trl and eric-mitchell/direct-preference-optimization
write it (``e2e/dpo_reward_sft_program.py``, trl 0.13's in ``e2e/dpo_trl013_program.py``, written once, ``torch``
being torch or kiln), on a tiny GPT-2 written as ``transformers``' ``modeling_gpt2.py`` writes it, trained in both
libraries from kiln's initial weights and compared in float64 to 1e-10: losses, metrics, first gradients, gradient
norms, learning rates, parameters and optimizer state after the steps; eagerly and with the training step under
``kiln.compile``; float32 at float32's level.

- The model: ``Conv1D`` (``torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)``), ``GPT2Attention`` with its
  ``torch.tril(torch.ones(..., dtype=torch.bool)).view(1, 1, n, n)`` non-persistent buffer sliced by the query and key
  lengths, ``masked_fill(~causal_mask, torch.finfo(dtype).min)``, the ``torch.full([], head_dim ** 0.5, dtype=...)``
  scale, ``c_attn(...).split(split_size, dim=2)``, ``_split_heads``/``_merge_heads`` (``size()[:-1] + (...)``,
  ``view``, ``permute(...).contiguous()``), ``attn_weights.type(value.dtype)``; ``GPT2Model``'s additive padding mask
  (``(1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min``, so a masked causal entry is -inf), ``wte`` +
  ``wpe`` of ``torch.arange(...).unsqueeze(0)``, ``nn.GELU(approximate="tanh")``, ``_init_weights`` by ``self.apply``
  (``weight.data.normal_``, the scaled ``c_proj.weight`` by ``named_parameters`` names); ``GPT2LMHeadModel`` with its
  head tied (``self.lm_head.weight = self.transformer.wte.weight``) and its shifted ``cross_entropy(...,
  ignore_index=-100)``; ``GPT2ForSequenceClassification``'s last non-pad token (``torch.eq(input_ids,
  pad_token_id).int().argmax(-1) - 1``, ``% input_ids.shape[-1]``, ``logits[torch.arange(batch_size),
  sequence_lengths]``), a row without padding wrapping to its last token. Outputs are a ``ModelOutput`` (a dict read
  by ``.logits`` and ``["logits"]``).
- trl's helpers: ``pad_to_length`` (``torch.cat([tensor, pad_value * torch.ones(*pad_size, dtype=tensor.dtype,
  device=tensor.device)], dim=dim)``), ``disable_dropout_in_model`` (``isinstance(module, torch.nn.Dropout)``,
  ``module.p = 0``), ``create_reference_model`` (``deepcopy(model)``, the tie kept in the copy, ``get_parameter(name)
  .requires_grad = False``, ``.eval()``), the collators' ``pad_sequence([torch.LongTensor(ids) ...], batch_first=True,
  padding_value=...)``, ``RewardDataCollatorWithPadding``'s ``torch.tensor(margins, dtype=torch.float)`` (float32
  margins under float64 rewards), ``DataCollatorForCompletionOnlyLM`` (``labels[labels == pad] = -100``, ``np.where(
  batch["labels"][i] == response_token_ids[0])[0]`` of a tensor, ``labels[i][idx: idx + n].tolist()``, ``labels[i, :end]
  = -100``, the warning and ``labels[i, :] = -100`` for a row without the template), ``compute_accuracy`` (NumPy on
  the predictions).
- DPO, twice: eric-mitchell's ``trainers.py`` (``_get_batch_logps`` with ``labels[:, 1:].clone()``, ``labels[labels
  == -100] = 0``, ``torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)``, the masked
  sum; ``concatenated_inputs``; ``concatenated_forward`` splitting ``[:batch_size]``/``[batch_size:]``;
  ``preference_loss`` with ``label_smoothing`` (cDPO) and ``ipo``; rewards ``beta * (...).detach()``; the reference
  forward under ``torch.no_grad()``; metrics ``(chosen_rewards > rejected_rewards).float()`` and
  ``.cpu().numpy().tolist()``; micro-batches by slicing, ``(loss / k).backward()``; ``clip_grad_norm_(...).item()``;
  ``getattr(torch.optim, "RMSprop")``; its ``LambdaLR(lambda step: min(1.0, (step + 1) / (warmup_steps + 1)))``) and
  trl's ``DPOTrainer`` (``concatenated_inputs`` with ``.to(device=...)``, ``get_batch_logps`` with
  ``average_log_prob`` for ipo, ``dpo_loss`` of the loss types sigmoid with label smoothing, hinge (``torch.relu(1 -
  beta * logits)``), ipo and kto_pair (``.mean().clamp(min=0)``, ``F.sigmoid``, ``torch.cat``), ``reference_free``
  (``torch.tensor([0], dtype=..., device=...)``), metrics as ``.mean().cpu()`` tensors, the logits' means too) under
  ``Trainer``'s loop: AdamW over ``get_parameter_names(model, [nn.LayerNorm])`` minus biases (``model._parameters``,
  ``named_children``), ``get_linear_schedule_with_warmup`` (a ``LambdaLR`` of a ``functools.partial``), loss / k
  for gradient accumulation, ``clip_grad_norm_`` returning the norm, ``zero_grad()``; then an eval batch
  (``model.eval()``, ``torch.no_grad()``, the ``eval_`` metrics).
- trl 0.13's DPO: ``DataCollatorForPreference`` (``pad`` by ``np.max([t.shape for t in tensors], 0).tolist()``,
  ``torch.full``, ``output[i][slices] = t`` through a row view, prompts padded left), ``concatenated_inputs`` (prompt
  and completions apart, ``torch.cat`` of a tuple without ``dim``), ``concatenated_forward`` (``flush_left``:
  ``torch.nonzero(mask[i])[0].item()``, ``torch.roll`` written into rows, the all-zero columns cut;
  ``torch.roll(input_ids, shifts=-1, dims=1)`` labels, ``labels[~loss_mask] = 0``, ``selective_log_softmax`` (gather
  minus ``torch.stack([torch.logsumexp(lg, dim=-1) for lg in logits])``), ``per_token_logps[~loss_mask] = 0`` on a
  tensor that requires grad, the RPO ``nll_loss`` by ``torch.flatten(..., end_dim=1)`` and ``ignore_index=0``, the
  mean logits by ``logits[:n][loss_mask[:n]].mean()``), ``compute_ref_log_probs``, ``dpo_loss`` with ``(not
  reference_free) * ref_logps`` (a bool times a tensor), the alpha divergence (``cap_exp``: ``torch.zeros([1]).to(
  dtype) + torch.finfo(dtype).max``, ``torch.clamp(value, max=<tensor>)``) and the JS divergence (``logits -=
  F.softplus(...) - ...`` in place), the loss types robust, exo_pair (``math.log``), bco_pair (``RunningMoments``:
  ``torch.var_mean(xs, unbiased=False)``, ``.float()``, ``.item()`` under ``@torch.no_grad()`` as a decorator),
  sppo_hard, nca_pair, aot_pair (``torch.sort(..., dim=0)`` differentiated), apo_zero, discopop, ipo and hinge;
  metrics by ``.mean().item()``; ``gradient_checkpointing_enable()`` (``functools.partial(torch.utils.checkpoint
  .checkpoint, use_reentrant=True)`` over ``block.__call__``).
- RewardTrainer: ``compute_loss`` (``model(...)["logits"]``, ``-nn.functional.logsigmoid(chosen - rejected -
  inputs["margin"]).mean()``, ``loss += center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)``,
  ``return_outputs``) and ``prediction_step`` (``torch.stack(logits).mean(dim=2).softmax(dim=0).T``,
  ``torch.zeros(n)`` labels) then ``compute_accuracy``.
- SFT: the completion-only collator's labels, ``Trainer``'s ``training_step`` (``model.train()``, loss / k,
  ``backward``, ``loss.detach()``), the LM's shifted ``F.cross_entropy(logits.view(-1, V), labels.view(-1),
  ignore_index=-100)``, a step every k micro-batches with ``clip_grad_norm_`` and AdamW and the linear warmup; and
  as SFTTrainer runs a PEFT model: embeddings frozen (``requires_grad_(False)``), ``gradient_checkpointing_enable``
  with ``use_reentrant`` True and False, ``enable_input_require_grads()`` (a forward hook on
  ``get_input_embeddings()`` calling ``output.requires_grad_(True)``); without the hook, reentrant checkpointing
  warns and leaves the blocks without gradients, in kiln as in torch.

Adapted: eric-mitchell's ``concatenated_forward`` casts the logits ``.to(torch.float32)``; the float64 runs pass
float64 (``logits_dtype``), the float32 run keeps the cast as written. ``all_gather_if_needed`` is the identity on
one process, ``slice_and_move_batch_for_device`` a slice. HF's ``ModelOutput``, ``Trainer`` and the datasets are not
imported: the few lines used are written out, as the docstrings say. The reward model's dropout is 0 (its trainer
leaves dropout on; the draws would differ); the LM's dropout is removed by ``disable_dropout_in_model`` as trl does.

Compiled: trl's DPO micro-step and update step (forward of policy and reference, the loss, backward; then clipping,
AdamW, ``zero_grad``), the reward step and the SFT micro/update steps are each one ``kiln.compile(fullgraph=True)``
graph, the schedulers stepping between calls; eric-mitchell's ``get_batch_metrics`` (``.numpy().tolist()`` in the
step) and trl 0.13's step (``flush_left``'s ``nonzero(...).item()``, the metrics' ``.item()``) compiled without
``fullgraph`` run eagerly with kiln's one warning, where torch.compile breaks its graph (fullgraph refuses both in
torch too).

A compiled policy: ``kiln.compile(model, fullgraph=True)`` before the trainer (accelerate's ``torch.compile``
wrapping), deep-copied into the reference model, its ``model(...).logits`` read by the loss in the eager loop.

What broke: a compiled model's ``ModelOutput`` (a ``dict`` subclass) came back as a plain ``dict``, so
``model(...).logits`` raised AttributeError where torch.compile returns the ``ModelOutput``; ``runtime/pytree.py`` now
rebuilds a dict subclass as its class (by keywords, as ``transformers`` registers ``ModelOutput`` with torch's pytree;
``tests/runtime/test_compiled_dict_outputs_vs_torch.py``). Everything else agrees at 1e-10 in float64, eagerly and
compiled. Differences kept: the attention key biases are compared looser (``KEY_BIAS``: softmax cancels them, their
gradients are rounding noise); kiln specializes ``flush_left``'s per-row ``nonzero(mask[i])[0].item()`` on the
call's masks only while the ops from the inputs to a row's mask stay within ``frontend/value_guards.py``'s
``MAX_OPS`` (64): each row's ``torch.roll`` write adds to the next row's, and the eighth row of the concatenated batch
passes it (the step's metrics ``.item()`` of the policy's outputs would end the trace there anyway, as in torch).
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import kiln
from e2e import dpo_reward_sft_program as program
from e2e import dpo_trl013_program as trl013
from e2e.probe_lockstep import (array, assert_same_records, compiled_module_training, gradients, run_in_lockstep,
                                snapshot, split_key_bias)
from oracles import libraries

STEPS = 3
ACCUMULATION = 2
FLOAT32 = dict(rtol=2e-5, atol=2e-6)
KEY_BIAS = {"key bias": dict(rtol=0, atol=1e-10)}
KEY_BIAS_FLOAT32 = {"key bias": dict(rtol=0, atol=STEPS * 1e-2)}
"""The attention key biases (``c_attn.bias``'s middle third): softmax cancels them, so their gradients are rounding
noise that AdamW's steps turn into ~1e-12 moves in float64 and, in float32 (noise near AdamW's eps), moves of up to
lr (1e-2) a step, differently in each library (``probe_lockstep.split_key_bias``; measured 1e-3 after the steps);
every other entry is compared tight."""


def assert_same_training(ours, theirs, looser=KEY_BIAS, **tolerance):
    """The two records close, the key biases split out of the states (see ``KEY_BIAS``)."""
    split = lambda record: split_key_bias(record, "c_attn.bias")  # noqa: E731
    assert_same_records(split(ours), split(theirs), looser=looser, **tolerance)


def optimizer_state(optimizer):
    """Every entry of ``optimizer.state_dict()["state"]`` as an array (tensors and numbers alike)."""
    return {f"{index}.{key}": array(value) if hasattr(value, "detach") else np.asarray(value, np.float64)
            for index, entry in optimizer.state_dict()["state"].items() for key, value in entry.items()}


def append_metrics(record, metrics):
    """Each metric (a tensor in trl, a list in eric-mitchell's) appended to its list in ``record["metrics"]``."""
    for key, value in metrics.items():
        record["metrics"].setdefault(key, []).append(value.item() if hasattr(value, "item") else value)


def policy_model(torch, nn, F):
    """The policy: the tiny GPT-2 LM, dropout removed as trl's trainers do."""
    model = program.modeling_gpt2(torch, nn, F).GPT2LMHeadModel(program.GPT2Config())
    program.trl_utils(torch, nn, F).disable_dropout_in_model(model)
    return model


def reward_model(torch, nn, F):
    config = program.GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return program.modeling_gpt2(torch, nn, F).GPT2ForSequenceClassification(config)


def micro_batches(batch, count):
    """``slice_and_move_batch_for_device`` on one process: the ``count`` slices of every tensor of ``batch``."""
    size = len(next(iter(batch.values()))) // count
    return [{key: value[i * size:(i + 1) * size] for key, value in batch.items()} for i in range(count)]


def preference_batches(torch, steps=STEPS, per_step=4):
    utils = program.trl_utils(torch, None, None)
    rows = program.preference_rows(steps * per_step)
    return [utils.dpo_collate(rows[i * per_step:(i + 1) * per_step]) for i in range(steps)]


# ---------------------------------------------------------------------------------------------------- trl DPO

def trl_dpo_training(loss_type, compiled=False, **options):
    """trl's DPOTrainer under Trainer's loop: each step ACCUMULATION micro-batches (loss / k, backward), then
    ``clip_grad_norm_``, AdamW, the linear warmup, ``zero_grad``. ``compiled``: the micro-step and the update step
    each one ``kiln.compile(fullgraph=True)`` graph in kiln."""

    def train(torch, nn, F, model):
        utils, hf = program.trl_utils(torch, nn, F), program.hf_trainer(torch, nn, F)
        trainer = program.trl_dpo(torch, nn, F)(utils.create_reference_model(model), loss_type=loss_type, **options)
        optimizer = hf.create_optimizer(model)
        scheduler = hf.get_linear_schedule_with_warmup(optimizer, num_warmup_steps=1, num_training_steps=STEPS + 1)
        assert not any(p.requires_grad for p in trainer.ref_model.parameters()) and not trainer.ref_model.training

        def micro(batch):
            loss, metrics = trainer.get_batch_loss_metrics(model, batch)
            (loss / ACCUMULATION).backward()
            return loss.detach(), metrics

        def update(batch):
            loss, metrics = micro(batch)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            return loss, metrics, norm

        if compiled and torch is kiln:
            micro, update = kiln.compile(micro, fullgraph=True), kiln.compile(update, fullgraph=True)
        record = {"losses": [], "metrics": {}, "norms": [], "lrs": []}
        for batch in preference_batches(torch):
            first, last = micro_batches(batch, ACCUMULATION)
            loss, metrics = micro(first)
            record["losses"].append(loss.item())
            append_metrics(record, metrics)
            if not record.get("grads") and not compiled:
                record["grads"] = gradients(model)
            loss, metrics, norm = update(last)
            scheduler.step()
            record["losses"].append(loss.item())
            append_metrics(record, metrics)
            record["norms"].append(norm.item())
            record["lrs"].append(scheduler.get_last_lr())
        assert model.lm_head.weight is model.transformer.wte.weight
        model.eval()
        with torch.no_grad():  # Trainer.evaluate's prediction_step
            loss, metrics = trainer.get_batch_loss_metrics(model, preference_batches(torch, steps=1)[0], "eval")
        evaluation = {"loss": loss.item(), **{key: value.item() for key, value in metrics.items()}}
        return {**record, "state": snapshot(model), "optimizer": optimizer_state(optimizer),
                "reference": snapshot(trainer.ref_model), "eval": evaluation}

    return train


LOSS_TYPES = [("sigmoid", dict(label_smoothing=0.1)), ("hinge", {}), ("ipo", {}), ("kto_pair", {}),
              ("sigmoid", dict(reference_free=True))]
LOSS_IDS = ["sigmoid-cdpo", "hinge", "ipo", "kto_pair", "reference_free"]


@pytest.mark.parametrize("loss_type, options", LOSS_TYPES, ids=LOSS_IDS)
def test_trl_dpo_trains_as_torch(float64_default, loss_type, options):
    ours, theirs = run_in_lockstep(policy_model, trl_dpo_training(loss_type, **options))
    assert_same_training(ours, theirs)
    assert ours["reference"] != {} and not np.allclose(ours["state"]["lm_head.weight"],
                                                       ours["reference"]["lm_head.weight"])
    assert theirs["lrs"][:2] == [[1e-2, 1e-2], [1e-2 * (2 / 3)] * 2]


@pytest.mark.parametrize("loss_type, options", LOSS_TYPES[:3], ids=LOSS_IDS[:3])
def test_trl_dpo_compiled_steps_as_torch(float64_default, loss_type, options):
    ours, theirs = run_in_lockstep(policy_model, trl_dpo_training(loss_type, compiled=True, **options))
    assert_same_training(ours, theirs)


def test_trl_dpo_with_a_compiled_policy_as_torch(float64_default):
    """kiln's policy as ``kiln.compile(model, fullgraph=True)`` (accelerate's ``torch.compile`` wrapping before the
    trainer starts), so ``create_reference_model`` deep-copies the compiled module and the loss reads
    ``model(...).logits`` of the compiled forward; torch's model as it is."""
    train = compiled_module_training(trl_dpo_training("sigmoid", label_smoothing=0.1))
    ours, theirs = run_in_lockstep(policy_model, train)
    assert_same_training(ours, theirs)


# ------------------------------------------------------------------------------------------- eric-mitchell's DPO

def mitchell_training(loss_name, logits_dtype=None, compiled=False):
    """``BasePreferenceTrainer.train``'s inner loop: ACCUMULATION micro-batches of ``get_batch_metrics``, ``(loss /
    k).backward()``, ``clip_gradient``, RMSprop, the warmup ``LambdaLR``, ``zero_grad``. ``compiled``: the
    micro-step under ``kiln.compile`` (no fullgraph: ``.numpy().tolist()`` runs it eagerly)."""
    config = SimpleNamespace(name=loss_name, beta=0.1, reference_free=False, label_smoothing=0.1)

    def train(torch, nn, F, model):
        dpo = program.mitchell_dpo(torch, nn, F, logits_dtype=torch.float64 if logits_dtype == "float64" else None)
        reference_model = program.trl_utils(torch, nn, F).create_reference_model(model)
        optimizer = getattr(torch.optim, "RMSprop")(model.parameters(), lr=1e-3)
        scheduler = dpo.warmup_scheduler(optimizer, warmup_steps=2)

        def micro(batch):
            loss, metrics = dpo.get_batch_metrics(model, reference_model, batch, config, train=True)
            (loss / ACCUMULATION).backward()
            return loss.detach(), metrics

        run = kiln.compile(micro) if compiled and torch is kiln else micro
        record = {"metrics": {}, "norms": [], "lrs": [], "warnings": []}
        for batch in preference_batches(torch):
            for microbatch in micro_batches(batch, ACCUMULATION):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    loss, metrics = run(microbatch)
                record["warnings"] += [str(w.message) for w in caught if "kiln.compile" in str(w.message)]
                append_metrics(record, {"loss": loss.item(), **metrics})
            record.setdefault("grads", gradients(model))
            record["norms"].append(dpo.clip_gradient(model, 10.0))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            record["lrs"].append(scheduler.get_last_lr())
        return {**record, "state": snapshot(model), "optimizer": optimizer_state(optimizer)}

    return train


@pytest.mark.parametrize("loss_name", ["dpo", "ipo", "sft"])
def test_mitchell_dpo_trains_as_torch(float64_default, loss_name):
    ours, theirs = run_in_lockstep(policy_model, mitchell_training(loss_name, "float64"))
    assert ours.pop("warnings") == theirs.pop("warnings") == []
    assert_same_training(ours, theirs)
    assert theirs["lrs"] == [[1e-3 * 2 / 3], [1e-3], [1e-3]]
    if loss_name == "dpo":
        assert 0 < np.mean(theirs["metrics"]["rewards_train/accuracies"][2:]) < 1


def test_mitchell_dpo_compiled_runs_eagerly_as_torch(float64_default):
    ours, theirs = run_in_lockstep(policy_model, mitchell_training("dpo", "float64", compiled=True))
    warned = ours.pop("warnings")
    assert theirs.pop("warnings") == []
    assert len(warned) == 1 and "runs eagerly" in warned[0], warned
    assert_same_training(ours, theirs)


def test_mitchell_dpo_float32_as_written_trains_as_torch():
    """float32 throughout, ``.logits.to(torch.float32)`` as the repository writes it."""
    ours, theirs = run_in_lockstep(policy_model, mitchell_training("dpo"))
    assert ours.pop("warnings") == theirs.pop("warnings") == []
    assert_same_training(ours, theirs, looser=KEY_BIAS_FLOAT32, **FLOAT32)


def test_trl_dpo_float32_trains_as_torch():
    ours, theirs = run_in_lockstep(policy_model, trl_dpo_training("sigmoid", label_smoothing=0.1))
    assert_same_training(ours, theirs, looser=KEY_BIAS_FLOAT32, **FLOAT32)


# ------------------------------------------------------------------------------------------------ trl 0.13's DPO

def modern_dpo_training(loss_type, compiled=False, checkpointing=False, **options):
    """trl 0.13's DPOTrainer under Trainer's loop (one batch a step: loss, backward, ``clip_grad_norm_``, AdamW, the
    linear warmup, ``zero_grad``); ``checkpointing``: ``gradient_checkpointing_enable()`` on the policy;
    ``compiled``: the step under ``kiln.compile`` (no fullgraph: ``flush_left`` reads ``nonzero(...)[0].item()``)."""

    def train(torch, nn, F, model):
        utils, hf = program.trl_utils(torch, nn, F), program.hf_trainer(torch, nn, F)
        collate = trl013.trl_utils_modern(torch).preference_collate
        if checkpointing:
            model.gradient_checkpointing_enable()
        trainer = trl013.trl_dpo_modern(torch, nn, F)(utils.create_reference_model(model), loss_type=loss_type,
                                                       **options)
        optimizer = hf.create_optimizer(model)
        scheduler = hf.get_linear_schedule_with_warmup(optimizer, num_warmup_steps=1, num_training_steps=STEPS + 1)
        examples = trl013.preference_examples(4 * STEPS)

        def step(batch):
            loss, metrics = trainer.get_batch_loss_metrics(model, batch)
            loss.backward()
            grads = gradients(model)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            return loss.detach(), metrics, norm, grads

        run = kiln.compile(step) if compiled and torch is kiln else step
        record = {"losses": [], "metrics": {}, "norms": [], "lrs": [], "warnings": []}
        for index in range(STEPS):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loss, metrics, norm, grads = run(collate(examples[4 * index:4 * index + 4]))
            record["warnings"] += [str(w.message) for w in caught if "kiln.compile" in str(w.message)]
            record.setdefault("grads", grads)
            scheduler.step()
            record["losses"].append(loss.item())
            append_metrics(record, metrics)
            record["norms"].append(norm.item())
            record["lrs"].append(scheduler.get_last_lr())
        return {**record, "state": snapshot(model), "optimizer": optimizer_state(optimizer),
                "running": [trainer.running.mean, trainer.running.var, trainer.running.std]}

    return train


MODERN = [("sigmoid", dict(label_smoothing=0.1, rpo_alpha=0.5)), ("robust", dict(label_smoothing=0.1)),
          ("exo_pair", {}), ("bco_pair", {}), ("sppo_hard", {}), ("nca_pair", {}),
          ("aot_pair", dict(label_smoothing=0.1)), ("apo_zero", {}), ("discopop", {}), ("ipo", {}),
          ("sigmoid", dict(f_divergence_type="alpha_divergence")), ("sigmoid", dict(f_divergence_type="js_divergence")),
          ("hinge", dict(reference_free=True))]
MODERN_IDS = ["sigmoid-rpo", "robust", "exo_pair", "bco_pair", "sppo_hard", "nca_pair", "aot_pair", "apo_zero",
              "discopop", "ipo", "alpha_divergence", "js_divergence", "hinge-reference_free"]


@pytest.mark.parametrize("loss_type, options", MODERN, ids=MODERN_IDS)
def test_trl_013_dpo_trains_as_torch(float64_default, loss_type, options):
    ours, theirs = run_in_lockstep(policy_model, modern_dpo_training(loss_type, **options))
    assert ours.pop("warnings") == theirs.pop("warnings") == []
    assert_same_training(ours, theirs)


def test_trl_013_dpo_with_gradient_checkpointing_compiled_as_torch(float64_default):
    """The policy's blocks under ``torch.utils.checkpoint.checkpoint(block.__call__, ..., use_reentrant=True)``, the
    step under ``kiln.compile``: ``flush_left``'s per-row ``nonzero(mask[i])[0].item()`` is specialized on the
    batch's mask for the first seven rows, until the ops from the inputs to a row's mask pass ``value_guards.MAX_OPS``
    (each row's ``torch.roll`` write adds to the next row's): then the call runs eagerly with one warning naming the
    line, as ``torch.compile`` breaks its graph at the ``nonzero`` (fullgraph refused in both; the metrics'
    ``.item()`` of the policy's outputs would stop the trace next)."""
    ours, theirs = run_in_lockstep(policy_model, modern_dpo_training("sigmoid", compiled=True, checkpointing=True,
                                                                     rpo_alpha=0.5))
    warned = ours.pop("warnings")
    assert theirs.pop("warnings") == []
    assert len(warned) == 1 and "runs eagerly" in warned[0] and "flush_left" in warned[0], warned  # warned once
    assert_same_training(ours, theirs)


def test_trl_013_dpo_float32_trains_as_torch():
    ours, theirs = run_in_lockstep(policy_model, modern_dpo_training("sigmoid", label_smoothing=0.1, rpo_alpha=0.5))
    assert ours.pop("warnings") == theirs.pop("warnings") == []
    assert_same_training(ours, theirs, looser=KEY_BIAS_FLOAT32, **FLOAT32)


# ---------------------------------------------------------------------------------------------- reward model

def reward_training(compiled=False, center=0.01, margins=True):
    """RewardTrainer under Trainer's loop: one batch a step (``compute_loss``, backward, ``clip_grad_norm_``, AdamW,
    the linear warmup, ``zero_grad``), then ``prediction_step`` and ``compute_accuracy`` on an eval batch."""

    def train(torch, nn, F, model):
        utils, hf = program.trl_utils(torch, nn, F), program.hf_trainer(torch, nn, F)
        trainer = program.trl_reward(torch, nn, F)(center_rewards_coefficient=center)
        optimizer = hf.create_optimizer(model, learning_rate=3e-2)
        scheduler = hf.get_linear_schedule_with_warmup(optimizer, num_warmup_steps=1, num_training_steps=STEPS)
        rows = program.reward_rows(4 * STEPS + 4, margins=margins)
        batches = [utils.reward_collate(rows[i:i + 4]) for i in range(0, len(rows), 4)]

        def step(inputs):
            loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            return loss.detach(), outputs["rewards_chosen"].detach(), norm

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": [], "rewards": [], "norms": [], "lrs": []}
        for inputs in batches[:-1]:
            loss, rewards, norm = run(inputs)
            scheduler.step()
            record["losses"].append(loss.item())
            record["rewards"].append(array(rewards))
            record["norms"].append(norm.item())
            record["lrs"].append(scheduler.get_last_lr())
        loss, logits, labels = trainer.prediction_step(model, batches[-1])
        record["eval"] = {"loss": loss.item(), "logits": array(logits), "labels": array(labels),
                          **utils.compute_accuracy((array(logits), array(labels)))}
        return {**record, "state": snapshot(model), "optimizer": optimizer_state(optimizer)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_reward_model_trains_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(reward_model, reward_training(compiled=compiled))
    assert_same_training(ours, theirs)
    assert ours["rewards"][0].shape == (4, 1) and ours["eval"]["logits"].shape == (4, 2)


def test_reward_model_without_margin_or_centering_as_torch(float64_default):
    ours, theirs = run_in_lockstep(reward_model, reward_training(center=None, margins=False))
    assert_same_training(ours, theirs)


# ------------------------------------------------------------------------------------------------------ SFT

def sft_training(compiled=False, checkpointing=None):
    """SFTTrainer with the completion-only collator: ACCUMULATION micro-batches a step through ``training_step``,
    then ``clip_grad_norm_``, AdamW, the linear warmup, ``zero_grad``; ``compiled``: the micro-step and the update
    each one ``kiln.compile(fullgraph=True)`` graph. ``checkpointing``: the embeddings frozen (as PEFT freezes the
    base model), ``gradient_checkpointing_enable({"use_reentrant": checkpointing})`` and, as SFTTrainer does for a
    PEFT model, ``enable_input_require_grads()``."""

    def train(torch, nn, F, model):
        utils, hf = program.trl_utils(torch, nn, F), program.hf_trainer(torch, nn, F)
        if checkpointing is not None:
            model.transformer.wte.requires_grad_(False)
            model.transformer.wpe.requires_grad_(False)
            model.gradient_checkpointing_enable({"use_reentrant": checkpointing})
            model.enable_input_require_grads()
        optimizer = hf.create_optimizer(model)
        scheduler = hf.get_linear_schedule_with_warmup(optimizer, num_warmup_steps=1, num_training_steps=STEPS + 1)
        rows = program.completion_rows(4 * STEPS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batches = [utils.completion_only_collate(rows[i:i + 2]) for i in range(0, len(rows), 2)]

        def micro(inputs):
            return hf.training_step(model, inputs, hf.sft_loss, ACCUMULATION)

        def update(inputs):
            loss = micro(inputs)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            return loss, norm

        if compiled and torch is kiln:
            micro, update = kiln.compile(micro, fullgraph=True), kiln.compile(update, fullgraph=True)
        labels = {str(i): array(batch["labels"]) for i, batch in enumerate(batches)}
        record = {"losses": [], "norms": [], "lrs": [], "labels": labels}
        for index, inputs in enumerate(batches):
            if (index + 1) % ACCUMULATION:
                record["losses"].append(micro(inputs).item())
                if not compiled:
                    record.setdefault("grads", gradients(model))
                continue
            loss, norm = update(inputs)
            scheduler.step()
            record["losses"].append(loss.item())
            record["norms"].append(norm.item())
            record["lrs"].append(scheduler.get_last_lr())
        return {**record, "state": snapshot(model), "optimizer": optimizer_state(optimizer)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_sft_completion_only_with_accumulation_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(policy_model, sft_training(compiled=compiled))
    assert_same_training(ours, theirs)
    assert (ours["labels"]["1"][1] == -100).all()  # the row without the response template: every label ignored


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_sft_with_frozen_embeddings_and_gradient_checkpointing_as_torch(float64_default, compiled, reentrant):
    ours, theirs = run_in_lockstep(policy_model, sft_training(compiled=compiled, checkpointing=reentrant))
    assert_same_training(ours, theirs)
    assert "transformer.wte.weight" not in theirs.get("grads", {}) and len(theirs["optimizer"]) > 0


def frozen_inputs_without_the_hook(torch, nn, F, model):
    """Reentrant checkpointing of blocks whose input requires no grad (frozen embeddings, no
    ``enable_input_require_grads``): PyTorch warns and the blocks get no gradient; kiln does the same."""
    hf = program.hf_trainer(torch, nn, F)
    model.transformer.wte.requires_grad_(False)
    model.transformer.wpe.requires_grad_(False)
    model.gradient_checkpointing_enable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = program.trl_utils(torch, nn, F).completion_only_collate(program.completion_rows(4))
        hf.sft_loss(model, batch).backward()
    return {"grads": gradients(model), "warnings": sorted({str(w.message) for w in caught})}


def test_reentrant_checkpoint_of_frozen_inputs_as_torch(float64_default):
    ours, theirs = run_in_lockstep(policy_model, frozen_inputs_without_the_hook)
    assert ours.pop("warnings") == theirs.pop("warnings")
    assert set(theirs["grads"]) == {"transformer.ln_f.weight", "transformer.ln_f.bias"}
    assert_same_records(ours, theirs)


# --------------------------------------------------------------------------------------------------- pieces

def test_the_helpers_as_torch(float64_default):
    """The helpers alone: ``pad_to_length`` (int and float, longer input returned as is), both ``concatenated_inputs``,
    ``_get_batch_logps`` with ``average_log_prob``, the reward model's last-token pick of a row without padding, the
    completion-only labels and the collator's warning."""
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        utils = program.trl_utils(torch, nn, F)
        dpo, trl = program.mitchell_dpo(torch, nn, F, torch.float64), program.trl_dpo(torch, nn, F)
        batch = preference_batches(torch, steps=1)[0]
        record = {"pad": array(utils.pad_to_length(torch.ones(2, 3, dtype=torch.long), 5, -100)),
                  "pad float": array(utils.pad_to_length(torch.ones(2, 3), 4, 0.5, dim=0)),
                  "no pad": array(utils.pad_to_length(torch.ones(2, 3), 2, 7))}
        record["mitchell"] = {k: array(v) for k, v in dpo.concatenated_inputs(batch).items()}
        record["trl"] = {k: array(v) for k, v in trl.concatenated_inputs(batch).items()}
        labels = batch["chosen_labels"]
        logits = torch.tensor(np.random.default_rng(3).standard_normal((*labels.shape, program.VOCAB)))
        for average in (False, True):
            record[f"logps {average}"] = array(dpo._get_batch_logps(logits, labels, average))
            record[f"trl logps {average}"] = array(trl.get_batch_logps(logits, labels, average))
        kiln.manual_seed(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            record["sft labels"] = array(utils.completion_only_collate(program.completion_rows(4))["labels"])
        record["warned"] = len(caught)
        records.append(record)
    assert records[0].pop("warned") == records[1].pop("warned") == 1
    assert_same_records(records[0], records[1])
    assert records[0]["mitchell"]["concatenated_input_ids"].shape[0] == 8


def last_token_rewards(torch, nn, F, model):
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 4], [6, 0, 0, 0, 0]])
    rewards = model(ids, attention_mask=(ids != 0).long())["logits"]
    hidden = model.transformer(ids, attention_mask=(ids != 0).long())
    return {"rewards": array(rewards), "picked": array(model.score(hidden[[0, 1, 2], [2, 4, 0]]))}


def test_reward_model_picks_the_last_non_pad_token_as_torch(float64_default):
    ours, theirs = run_in_lockstep(reward_model, last_token_rewards)
    assert_same_records(ours, theirs)
    assert_same_records(ours["rewards"], ours["picked"])
