"""Porting probe: wav2vec 2.0 pre-training as Hugging Face's ``modeling_wav2vec2.py`` and
``run_wav2vec2_pretraining_no_trainer.py`` write it (``tests/e2e/wav2vec2_program.py``, ``wav2vec2_collator.py``;
``torch`` is ``torch`` or ``kiln``), run in both from kiln's initial weights.

- Feature encoder: ``input_values[:, None]`` made to require grad (``hidden_states.requires_grad = True``), a Conv1d
  stack, the first layer's ``GroupNorm(num_groups=dim, num_channels=dim, affine=True)``, GELU; the feature projection
  (LayerNorm, Linear, Dropout) returning the normed features for the quantizer.
- Positional conv embedding: ``nn.utils.weight_norm(conv, name="weight", dim=2)`` (and the parametrization HF picks
  where torch has it) on a grouped Conv1d with ``padding=kernel // 2``, ``Wav2Vec2SamePadLayer`` dropping the last frame
  (even kernel); post-norm encoder layers with BART-style attention (``_shape``, ``bmm``) and LayerDrop's
  ``torch.rand([])``.
- ``_compute_mask_indices`` and ``_sample_negative_indices`` in NumPy (their draws from a given ``RandomState``), the
  mask applied by ``hidden_states[mask_time_indices] = self.masked_spec_embed.to(hidden_states.dtype)``; the
  codebook and the embedding made by ``torch.Tensor(...)`` (``.uniform_()``) and initialised by HF's ``_init_weights``
  (``model.apply``, ``.data.normal_``, ``nn.init.*``).
- Gumbel vector quantizer: in training ``gumbel_softmax(hard=True)`` with its Gumbel noise fed (torch's own formula),
  ``.type_as``, the perplexity ``torch.exp(-torch.sum(p * torch.log(p + 1e-7), dim=-1)).sum()`` over the masked
  frames (``torch.where`` on an expanded mask); in eval ``argmax`` + ``new_zeros(...).scatter_(-1, idx.view(-1, 1),
  1.0)``; the temperature annealed between steps by ``model.set_gumbel_temperature(t)`` (a module attribute).
- Contrastive loss: negatives gathered by ``quantized_features.view(-1, hidden)[indices.long().view(-1)]``,
  ``torch.cosine_similarity``, ``logits[1:][neg_is_pos] = float("-inf")`` (an in-place boolean-mask write through a
  slice view; the tiny codebook makes identical negatives common), ``cross_entropy(logits.transpose(0, 2).reshape(-1,
  logits.size(0)), target, reduction="sum")`` with ``-100`` targets for unmasked frames, the diversity loss.
- wav2vec2-large-lv60's layout too: LayerNorm conv layers, the pre-norm encoder, a padded batch with its attention
  mask (``_get_feature_vector_attention_mask``: ``cumsum``, an index-put at ``(arange, output_lengths - 1)``,
  ``flip([-1]).cumsum(-1).flip([-1]).bool()``; ``hidden_states[~expand_attention_mask] = 0``; ``torch.finfo(dtype).min``
  additive masks) and the masks drawn from ``sub_attention_mask``; SpecAugment along the feature axis drawn in
  ``forward`` (``hidden_states[mask_feature_indices[:, None].expand(-1, sequence_length, -1)] = 0``).
- The script's loop: ``multiply_grads`` (``p.grad.data.mul_(1 / num_losses)``), ``get_grad_norm`` (``.item()``), AdamW,
  a linear warmup/decay ``LambdaLR``, the Gumbel temperature ``max(max_t * decay ** completed_steps, min_t)``.

Checked against torch 2.13 in float64 to 1e-10 (first forward, first gradients, losses, grad norms, state after the
steps, the eval forward's quantizer path), eagerly and with the whole step (zero_grad, forward, loss, backward,
multiply_grads, AdamW) one ``kiln.compile(fullgraph=True)`` graph with masks, negatives, Gumbel noise (and the attention
mask) fed as inputs; the reference's ``.float()`` upcasts in a float64 model at float32's level; float32 training at
float32's level; the feature encoder + transformer forward (both layouts) through ``kiln.compile`` and
``kiln.onnx.export`` run by onnxruntime (float32).

Both libraries refuse HF's two Python branches on values the graph computes inside ``kiln.compile(fullgraph=True)`` /
``torch.compile(fullgraph=True)`` (LayerDrop's ``torch.rand([]) < layerdrop``, ``if neg_is_pos.any()``): the compiled
step makes the edits a torch.compile user makes (``fullgraph_edits``), and kiln's refusal is checked.

What broke: ``kiln.onnx.export`` of the eval forward asked for an ``rng_seed`` input: LayerDrop's ``torch.rand([])`` is
drawn in eval too and never read, DCE removed the draw but kept the seed input, and onnxruntime refused the feed
without it. The unused seed input is dropped now (``runtime/export.py``,
``tests/onnx/test_onnx_export_unused_draw.py``).
Everything else (weight norm over ``dim=2`` in both forms, the boolean-mask writes, the ``-inf`` logits through a
slice view, the gathered negatives, the straight-through quantizer, ``multiply_grads`` through ``.grad.data``, the
annealed temperature in the compiled step, the large layout's attention masks) agreed with torch as first written.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.wav2vec2_collator import _compute_mask_indices, _sample_negative_indices, get_grad_norm, multiply_grads
from e2e.wav2vec2_program import CONFIG, LARGE_CONFIG, wav2vec2_for_pretraining
from kiln.compiler.errors import TraceError
from oracles import libraries, require

BATCH, SAMPLES, STEPS = 2, 80, 3
FRAMES = 12  # (80 - 5) // 3 + 1 = 26 frames, then (26 - 3) // 2 + 1
PADDED_LENGTHS = [80, 47]  # the large layout's padded batch: 12 and 7 frames
MAX_TEMPERATURE, MIN_TEMPERATURE, TEMPERATURE_DECAY = 2.0, 0.5, 0.9
pytestmark = pytest.mark.filterwarnings("ignore:`(kiln|torch).nn.utils.weight_norm` is deprecated:FutureWarning")


def batches(steps=STEPS, seed=0, sub_attention_mask=None):
    """What ``DataCollatorForWav2Vec2Pretraining`` gives: the waveforms, the time mask and the negatives, and the
    Gumbel noise each step's quantizer adds (``-log(Exponential(1))``, torch's draw); ``sub_attention_mask`` (a
    library's tensor) the frames of padded waveforms (``PADDED_LENGTHS``), which the masks keep to."""
    random = np.random.RandomState(seed)
    made = []
    for _ in range(steps):
        waves = random.standard_normal((BATCH, SAMPLES))
        if sub_attention_mask is not None:
            waves[np.arange(SAMPLES) >= np.array(PADDED_LENGTHS)[:, None]] = 0.0
        mask = _compute_mask_indices((BATCH, FRAMES), CONFIG.mask_time_prob, CONFIG.mask_time_length,
                                     attention_mask=sub_attention_mask, min_masks=CONFIG.mask_time_min_masks,
                                     random=random)
        negatives = _sample_negative_indices((BATCH, FRAMES), CONFIG.num_negatives, mask, random=random)
        gumbels = -np.log(random.exponential(size=(BATCH * FRAMES * CONFIG.num_codevector_groups,
                                                  CONFIG.num_codevectors_per_group)))
        made.append((waves, mask, negatives, gumbels))
    return made


def as_tensors(torch, batch):
    waves, mask, negatives, gumbels = batch
    dtype = torch.get_default_dtype()
    return (torch.tensor(waves, dtype=dtype), torch.tensor(mask, dtype=torch.long),
            torch.tensor(negatives, dtype=torch.long), torch.tensor(gumbels, dtype=dtype))


def waveform_attention_mask(torch):
    return torch.tensor((np.arange(SAMPLES) < np.array(PADDED_LENGTHS)[:, None]).astype(np.int64))


def make_optimizer(torch, model):
    optimizer = torch.optim.AdamW(list(model.parameters()), lr=5e-3, betas=[0.9, 0.98], eps=1e-6)
    warmup, total = 1, STEPS

    def linear_schedule(step):  # transformers' get_linear_schedule_with_warmup
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_schedule(step + 1))


def gumbel_temperature(completed_steps):
    return max(MAX_TEMPERATURE * TEMPERATURE_DECAY**completed_steps, MIN_TEMPERATURE)


def train_pretraining(steps=STEPS, padded=False):
    """The script's training loop (gradient accumulation 1, one process); ``padded``: the collator's padded batch,
    its attention mask and ``sub_attention_mask`` (``model._get_feature_vector_attention_mask``) made by the library
    under test."""

    def train(torch, nn, F, model):
        optimizer, lr_scheduler = make_optimizer(torch, model)
        record = {"losses": [], "grad_norms": [], "perplexities": []}
        attention_mask = waveform_attention_mask(torch) if padded else None
        sub_attention_mask = model._get_feature_vector_attention_mask(FRAMES, attention_mask) if padded else None
        data = batches(steps, sub_attention_mask=sub_attention_mask)
        model.train()
        for completed_steps, batch in enumerate(data):
            input_values, mask_time_indices, sampled_negative_indices, gumbels = as_tensors(torch, batch)
            num_losses = mask_time_indices.sum()
            if sub_attention_mask is None:
                sub_attention_mask = torch.ones_like(mask_time_indices)
            record.setdefault("percent_masked", (num_losses / sub_attention_mask.sum()).item())
            outputs = model(input_values, attention_mask=attention_mask, mask_time_indices=mask_time_indices,
                            sampled_negative_indices=sampled_negative_indices, gumbels=gumbels)
            loss = outputs.loss / 1
            loss.backward()
            multiply_grads(torch, model.parameters(), 1 / num_losses)
            record.setdefault("projected_states", array(outputs.projected_states))
            record.setdefault("grads", gradients(model))
            record["grad_norms"].append(get_grad_norm(model.parameters(), 1))
            optimizer.step()
            optimizer.zero_grad()
            lr_scheduler.step()
            model.set_gumbel_temperature(gumbel_temperature(completed_steps + 1))
            record["losses"].append(loss.item())
            record["perplexities"].append(outputs.codevector_perplexity.item())
        record["state"] = snapshot(model)
        return record

    return train


def build(upcast=False, legacy_weight_norm=True, fullgraph_edits=False, config=CONFIG):
    return lambda torch, nn, F: wav2vec2_for_pretraining(torch, nn, F, config=config, upcast=upcast,
                                                         legacy_weight_norm=legacy_weight_norm,
                                                         fullgraph_edits=fullgraph_edits)


@pytest.mark.parametrize("legacy_weight_norm", [True, False], ids=["weight_norm", "parametrizations.weight_norm"])
def test_wav2vec2_pretraining_as_torch(legacy_weight_norm, float64_default):
    ours, theirs = run_in_lockstep(build(legacy_weight_norm=legacy_weight_norm), train_pretraining())
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_large_layout_with_padded_waveforms_as_torch(float64_default):
    """wav2vec2-large-lv60's layout: LayerNorm conv layers (``transpose(-2, -1)``), the pre-norm encoder, and a padded
    batch: ``_get_feature_vector_attention_mask`` (``cumsum``, an index-put of ``(arange, output_lengths - 1)``,
    ``flip().cumsum().flip().bool()``), ``hidden_states[~expand_attention_mask] = 0``, ``torch.finfo(dtype).min``
    additive masks, the masks drawn from ``sub_attention_mask`` (``attention_mask.detach().sum(-1).tolist()``)."""
    ours, theirs = run_in_lockstep(build(config=LARGE_CONFIG), train_pretraining(padded=True))
    assert_same_records(ours, theirs)
    assert 0 < theirs["percent_masked"] < 1  # of the 19 frames that are not padding


def test_feature_axis_spec_augment_drawn_in_forward_as_torch(float64_default):
    """``mask_feature_prob > 0``: ``_compute_mask_indices`` drawn inside ``forward`` (from the same-seeded
    ``RandomState`` in both), ``torch.tensor(..., dtype=torch.bool)[:, None].expand(-1, sequence_length, -1)`` and
    ``hidden_states[mask_feature_indices] = 0`` (a boolean index that is an expanded view)."""
    config = SimpleNamespace(**{**vars(CONFIG), "mask_feature_prob": 0.3})

    def build_with_feature_masks(torch, nn, F):
        model = build(config=config)(torch, nn, F)
        model.wav2vec2.spec_augment_random = np.random.RandomState(7)
        return model

    ours, theirs = run_in_lockstep(build_with_feature_masks, train_pretraining())
    assert_same_records(ours, theirs)


def test_masks_and_negatives_as_the_collator_makes_them():
    """The fed masks hold spans of ``mask_time_length`` frames, at least ``min_masks`` of them, and each masked
    frame's negatives are other masked frames of its own utterance (offset by ``batch_idx * sequence_length``)."""
    for waves, mask, negatives, gumbels in batches():
        assert mask.shape == (BATCH, FRAMES) and mask.sum(-1).min() >= CONFIG.mask_time_length
        for row in range(BATCH):
            masked = np.flatnonzero(mask[row])
            picked = negatives[row][mask[row]] - row * FRAMES
            assert np.isin(picked, masked).all() and (picked != masked[:, None]).all()
            assert (negatives[row][~mask[row]] == row * FRAMES).all()


def test_feature_lengths_from_python_ints_and_tensors_as_torch():
    """The collator's ``model._get_feat_extract_output_lengths(batch["input_values"].shape[-1])``:
    ``torch.div(int - int, int, rounding_mode="floor") + 1`` on a Python int, then ``int(...)``; and on a tensor of
    lengths."""
    lengths = {}
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        model = build()(torch, nn, F)
        lengths[name] = (int(model._get_feat_extract_output_lengths(SAMPLES)),
                         array(model._get_feat_extract_output_lengths(torch.tensor([SAMPLES, 50, 17]))))
    assert lengths["kiln"][0] == lengths["torch"][0] == FRAMES
    np.testing.assert_array_equal(lengths["kiln"][1], lengths["torch"][1])
    assert lengths["kiln"][1].dtype == lengths["torch"][1].dtype


def test_quantizer_with_drawn_gumbel_noise_picks_codebook_entries():
    """Unfed, the quantizer draws with kiln's ``F.gumbel_softmax(hard=True)``: each group's output is one codebook
    entry (a one-hot choice), and the straight-through gradient reaches the projection's bias (through softmax rows:
    it sums to zero over each group's entries)."""
    torch, nn, F = libraries("kiln")
    kiln.manual_seed(0)
    model = build(upcast=True)(torch, nn, F).train()
    features = torch.tensor(np.random.default_rng(2).standard_normal((BATCH, FRAMES, CONFIG.conv_dim[-1])),
                            dtype=torch.float32)
    codevectors, perplexity = model.quantizer(features)
    groups, entries = CONFIG.num_codevector_groups, CONFIG.num_codevectors_per_group
    book = array(model.quantizer.codevectors).reshape(groups, entries, -1)
    chosen = array(codevectors).reshape(BATCH * FRAMES, groups, -1)
    for group in range(groups):
        distances = np.abs(chosen[:, group, None, :] - book[group][None]).max(-1)
        assert (distances.min(-1) == 0).all()
    weights = torch.tensor(np.arange(codevectors.numel()).reshape(codevectors.shape), dtype=torch.float32)
    (codevectors * weights).sum().backward()
    assert 1 <= float(perplexity) <= entries * groups
    bias_gradient = array(model.quantizer.weight_proj.bias.grad)
    group_sums = bias_gradient.reshape(groups, entries).sum(-1)
    assert np.abs(bias_gradient).max() > 0 and np.abs(group_sums).max() < 1e-5 * np.abs(bias_gradient).max()


def compiled_pretraining(steps=STEPS, padded=False):
    """The whole step compiled in kiln (torch's eager loop in torch); the temperature changes between calls; ``padded``
    as in ``train_pretraining``, the waveforms' attention mask an input of the step (reduced to frames inside it)."""

    def train(torch, nn, F, model):
        optimizer, lr_scheduler = make_optimizer(torch, model)
        attention_mask = waveform_attention_mask(torch) if padded else None
        sub_attention_mask = model._get_feature_vector_attention_mask(FRAMES, attention_mask) if padded else None
        data = batches(steps, sub_attention_mask=sub_attention_mask)

        def train_step(input_values, mask_time_indices, sampled_negative_indices, gumbels, attention_mask=None):
            optimizer.zero_grad()
            num_losses = mask_time_indices.sum()
            outputs = model(input_values, attention_mask=attention_mask, mask_time_indices=mask_time_indices,
                            sampled_negative_indices=sampled_negative_indices, gumbels=gumbels)
            outputs.loss.backward()
            multiply_grads(torch, model.parameters(), 1 / num_losses)
            optimizer.step()
            return outputs.loss.detach(), outputs.codevector_perplexity.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        record = {"losses": [], "perplexities": []}
        model.train()
        for completed_steps, batch in enumerate(data):
            loss, perplexity = run(*as_tensors(torch, batch), attention_mask)
            lr_scheduler.step()
            model.set_gumbel_temperature(gumbel_temperature(completed_steps + 1))
            record["losses"].append(loss.item())
            record["perplexities"].append(perplexity.item())
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("layout", ["base", "large, padded"])
def test_wav2vec2_compiled_step_as_torch(layout, float64_default):
    config, padded = (CONFIG, False) if layout == "base" else (LARGE_CONFIG, True)
    ours, theirs = run_in_lockstep(build(fullgraph_edits=True, config=config), compiled_pretraining(padded=padded))
    assert_same_records(ours, theirs)


def test_layerdrop_branch_on_a_draw_is_refused_by_the_compiled_step_as_torch(float64_default):
    """HF's LayerDrop branches in Python on ``torch.rand([]) < layerdrop``: torch.compile(fullgraph=True) refuses it
    ("Data-dependent branching"), and so does kiln's, naming the user's line."""
    kiln.manual_seed(0)
    torch, nn, F = libraries("kiln")
    model = build()(torch, nn, F)
    with pytest.raises(TraceError, match="skip_the_layer = True if self.training"):
        compiled_pretraining(steps=1)(torch, nn, F, model)


def evaluate_pretraining(torch, nn, F, model):
    """The eval forward: the quantizer's argmax + ``scatter_`` path, its perplexity, the contrastive loss."""
    input_values, mask_time_indices, sampled_negative_indices, _ = as_tensors(torch, batches(1)[0])
    model.eval()
    with torch.no_grad():
        outputs = model(input_values, mask_time_indices=mask_time_indices,
                        sampled_negative_indices=sampled_negative_indices)
    return {name: array(getattr(outputs, name)) for name in
            ("loss", "projected_states", "projected_quantized_states", "codevector_perplexity", "contrastive_loss")}


def test_wav2vec2_eval_forward_as_torch(float64_default):
    ours, theirs = run_in_lockstep(build(), evaluate_pretraining)
    assert_same_records(ours, theirs)


def test_reference_float_upcasts_in_a_float64_model_as_torch(float64_default):
    """With the reference's ``.float()`` (gumbel_softmax, the perplexity's softmax, cosine similarity, the logits of
    cross_entropy) a float64 model computes those in float32 and ``.type_as`` brings them back: float32's level."""
    ours, theirs = run_in_lockstep(build(upcast=True), train_pretraining(steps=2))
    assert ours["projected_states"].dtype == np.float64
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


def test_wav2vec2_float32_pretraining_as_torch():
    ours, theirs = run_in_lockstep(build(upcast=True), train_pretraining())
    assert ours["projected_states"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("layout", ["base", "large, padded"])
def test_feature_encoder_and_transformer_through_onnx_as_torch(layout):
    """``Wav2Vec2Model``'s eval forward (feature encoder, projection, positional conv with weight norm, encoder; the
    large layout with the padded batch's attention mask as a second input) through ``kiln.compile`` and
    ``kiln.onnx.export`` run by onnxruntime, against torch's eval forward (float32)."""
    onnxruntime = require("onnxruntime")
    padded = layout != "base"
    waves = batches(1)[0][0].astype(np.float32)
    if padded:
        waves[np.arange(SAMPLES) >= np.array(PADDED_LENGTHS)[:, None]] = 0.0
    names = ("last_hidden_state", "extract_features")

    def evaluate(torch, nn, F, model):
        encoder = model.wav2vec2.eval()
        inputs = (torch.tensor(waves),) + ((waveform_attention_mask(torch),) if padded else ())
        feeds = dict(zip(("input_values", "attention_mask"), (array(tensor) for tensor in inputs)))
        with torch.no_grad():
            eager = dict(zip(names, map(array, encoder(*inputs))))
        if torch is not kiln:
            return {"compiled": eager, "onnx": eager}
        with torch.no_grad():
            compiled = dict(zip(names, map(array, kiln.compile(encoder, fullgraph=True)(*inputs))))
        buffer = io.BytesIO()
        kiln.onnx.export(encoder, inputs, buffer, input_names=list(feeds), output_names=names)
        onnx = dict(zip(names, onnxruntime.InferenceSession(buffer.getvalue()).run(None, feeds)))
        return {"compiled": compiled, "onnx": onnx}

    ours, theirs = run_in_lockstep(build(upcast=True, config=LARGE_CONFIG if padded else CONFIG), evaluate)
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)
