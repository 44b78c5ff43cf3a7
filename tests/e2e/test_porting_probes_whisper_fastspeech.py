"""Porting probes: Whisper (openai/whisper's model.py, audio.py, decoding.py) and FastSpeech 2 (ming024/FastSpeech2's
model/modules.py, model/loss.py, utils/tools.py), tiny, each written once as its reference writes it (``torch`` is
``torch`` or ``kiln``) and run in both libraries from kiln's initial weights.

Whisper (n_mels 16, 8 audio frames, 16 channels, 2 heads, 2 layers, 50 tokens): ``log_mel_spectrogram`` (``torch.stft``
with a hann window, ``stft[..., :-1].abs() ** 2``, a NumPy mel filterbank by ``torch.from_numpy``, ``torch.clamp(mel_spec,
min=1e-10).log10()``, ``torch.maximum(log_spec, log_spec.max() - 8.0)``, ``(log_spec + 4.0) / 4.0``) after
``pad_or_trim``; ``sinusoids`` (``torch.exp(-log_timescale_increment * torch.arange(channels // 2))``, NumPy
``np.newaxis`` indexing, ``torch.cat([sin, cos], dim=1)``); the ``LayerNorm``/``Linear``/``Conv1d`` subclasses casting
to ``x.dtype`` in forward (``F.linear(x, self.weight.to(x.dtype), ...)``, ``super()._conv_forward(x,
weight.to(x.dtype), ...)``, ``super().forward(x.float()).type(x.dtype)``); ``MultiHeadAttention`` with the
``kv_cache`` dict keyed by modules and ``qkv_attention`` (``q.view(*q.shape[:2], self.n_head, -1).permute(0, 2, 1,
3)``, both sides scaled by ``(n_state // n_head) ** -0.25``, ``mask[:n_ctx, :n_ctx]``, ``F.softmax(qk,
dim=-1).to(q.dtype)``) or ``F.scaled_dot_product_attention(is_causal=...)``; the causal mask ``torch.empty(n_ctx,
n_ctx).fill_(-np.inf).triu_(1)`` as a non-persistent buffer; the encoder (``x.permute(0, 2, 1)``, ``assert x.shape[1:]
== self.positional_embedding.shape``); the decoder's tied output (``x @ torch.transpose(self.token_embedding.weight.to(
x.dtype), 0, 1)``); ``alignment_heads`` by ``to_sparse()``; ``install_kv_cache_hooks`` (forward hooks returning
``torch.cat([cache[module], output], dim=1).detach()``) and decoding.py's loop with the cache, equal to the
full-prefix decoding: ``SuppressBlank``/``SuppressTokens`` (``logits[:, self.suppress_tokens] = -np.inf``) and
``GreedyDecoder.update`` (``logprobs[torch.arange(n), next_tokens]``, ``sum_logprobs += ... * (tokens[:, -1] !=
eot)``, ``next_tokens[tokens[:, -1] == eot] = eot``, ``(tokens[:, -1] == eot).all()`` ending the loop); ``detect_language`` (``mask[list(language_tokens)] = False``,
``logits[:, mask] = -np.inf``, ``softmax``, ``.item()`` per language); timing.py's ``find_alignment`` (forward hooks
on the cross-attention storing the scores by ``QKs.__setitem__``, ``torch.std_mean``, ``median_filter`` by reflect
``F.pad`` + ``unfold`` + ``sort()[0]``) up to the DTW path. Teacher-forced cross-entropy with AdamW, eagerly (qkv_attention and SDPA) and as one
``kiln.compile(fullgraph=True)`` step, to 1e-10 in float64; the reference text as is in float32; fp16 inference
(``mel.half()``, float32 weights) at float16's level; the encoder through ``kiln.compile`` and ``kiln.onnx.export`` +
onnxruntime. In float64 the reference's ``.float()`` casts (LayerNorm, scores, logits) would round to float32 in both
libraries, so the float64 runs keep the input's dtype there (``float_islands=False``, the one change).

FastSpeech 2 (``VarianceAdaptor``, ``VariancePredictor`` with ``out.masked_fill(mask, 0.0)``, ``LengthRegulator``'s
Python loop ``vec.expand(max(int(expand_size), 0), -1)`` over ``predicted[i].item()`` then ``pad`` with ``F.pad`` and
``torch.LongTensor(mel_len)``, pitch/energy bins ``nn.Parameter(torch.exp(torch.linspace(np.log(min), np.log(max),
n - 1)), requires_grad=False)`` or linear, ``torch.bucketize``, ``get_mask_from_lengths``, FastSpeech2Loss with
``torch.log(duration_targets.float() + 1)``, ``requires_grad = False`` on targets, ``masked_select`` losses),
``clip_grad_norm_`` and Adam: eagerly to 1e-10 in float64 (and float32 at its level), and as one ``kiln.compile
(fullgraph=True)`` step: the durations, lengths and masks read from the batch are specialized and guarded, another
batch's durations trace a second variant (torch 2.13's ``torch.compile(fullgraph=True)`` compiles that step too,
with unbacked sizes). Synthesis with predicted durations (``torch.round(torch.exp(log_d) - 1)``, ``d_control``) agrees
with torch eagerly; compiled with ``fullgraph=True`` it is refused by both kiln (``.item()`` of a value computed from
the weights) and torch.compile (``Could not extract specialized integer`` at ``torch.LongTensor(mel_len)``); without
``fullgraph`` kiln runs it eagerly with a warning, as torch breaks the graph.

What broke: Whisper's ``Conv1d._conv_forward`` override was never called (kiln's ``Conv1d/2d/3d.forward`` called
``F.conv1d`` itself): a float16 mel with float32 weights was refused; ``forward`` now goes through ``_conv_forward``
as torch's (``frontend/layers_conv.py``, ``layers_conv3d.py``; ``tests/frontend/test_conv_forward_override_vs_torch.py``).
FastSpeech 2's compiled step stopped at ``pitch_predictions.masked_select(src_masks)`` ("data-dependent shape"); a
mask the trace knows (from the inputs, specialized and guarded, or constant) now selects
(``frontend/tensor_value_dependent.py``; ``tests/runtime/test_compiled_masked_select.py``). ``SuppressTokens``'
``logits[:, ids] = -np.inf`` wrote nan (``index_put`` picked the last write by multiplying by 0/1 and carried the
gradient by ``total - total.detach()``), so greedy decoding picked token 0; infinite writes now stay infinite
(``frontend/tensor_scatter_writes.py``; ``tests/frontend/test_index_put_infinite_values_vs_torch.py``).
``detect_language``'s ``logits[:, mask] = -np.inf`` (a bool mask after a slice) was refused; a known mask among index
items now stands for its true positions (``frontend/bool_mask_positions.py``;
``tests/frontend/test_bool_mask_among_indices_vs_torch.py``). ``alignment_heads.indices()`` answers as torch's COO
accessor, the sparse mark kept by ``register_buffer`` (kiln holds the tensor dense). A ``kiln.compile``d decoding
step given the kv cache the hooks fill gave silently wrong logits from the second call (the first trace left its
tensors in the cache); such stores into a container argument are now refused (``fullgraph=True`` raises, otherwise
the step runs eagerly, warned), where torch.compile(fullgraph=True) replays them (checked by hand).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from e2e.fastspeech2_program import DURATIONS, N_MEL, N_SYMBOLS, SRC_LENS, fastspeech2, fastspeech2_loss
from e2e.probe_lockstep import (array, assert_same_records, compiled_step_training, gradients, run_in_lockstep,
                                snapshot)
from e2e.whisper_program import (BATCH, BLANK, DECODE_TRAIN_STEPS, EOT, N_AUDIO_CTX, N_MELS, N_SAMPLES, N_TEXT_CTX,
                                 N_VOCAB, SOT, SUPPRESS_TOKENS, log_mel_spectrogram, pad_or_trim, whisper)
from oracles import libraries, require


def _audio(seed=0, dtype=np.float64):
    """Two clips of noisy tones, one short (padded by pad_or_trim) and one long (trimmed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_SAMPLES + 20) / 16000.0
    clips = [np.sin(2 * np.pi * 440 * t[:100]) + 0.1 * rng.standard_normal(100),
             0.5 * np.sin(2 * np.pi * 3000 * t) + 0.1 * rng.standard_normal(len(t))]
    return [clip.astype(dtype) for clip in clips]


def _tokens(seed=1):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, N_VOCAB, size=(BATCH, N_TEXT_CTX))
    tokens[:, 0] = SOT
    return tokens


def batch_mel(torch, F, dtype=None):
    """The batch of log-mel spectrograms, (BATCH, N_MELS, 16), as transcribe.py makes each one."""
    audio = _audio(dtype=np.float64 if torch.get_default_dtype() == torch.float64 else np.float32)  # load_audio: float32
    mels = [log_mel_spectrogram(torch, F, pad_or_trim(torch, F, torch.from_numpy(clip))) for clip in audio]
    mel = torch.stack(mels)
    return mel if dtype is None else mel.to(dtype)


def test_log_mel_spectrogram_as_torch(float64_default):
    """stft with a hann window, ``stft[..., :-1].abs() ** 2``, the NumPy filterbank, ``clamp(min=1e-10).log10()``,
    ``torch.maximum(log_spec, log_spec.max() - 8.0)`` and pad_or_trim's ``F.pad`` / ``index_select``."""
    ours, theirs = (array(batch_mel(*libraries(name)[::2])) for name in ("kiln", "torch"))
    assert ours.shape == (BATCH, N_MELS, 2 * N_AUDIO_CTX)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def teacher_forced_loss(torch, F, model, mel, tokens):
    """Next-token cross-entropy on the decoder's logits (the fine-tuning loss whisper fine-tuning scripts write)."""
    logits = model(mel, tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def whisper_batch(torch, F=None, dtype=None):
    F = F or libraries("kiln" if torch is kiln else "torch")[2]
    return batch_mel(torch, F, dtype), torch.tensor(_tokens())


def whisper_optimizer(torch, model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)


def train_whisper(steps=3, dtype=None):
    def train(torch, nn, F, model):
        mel, tokens = whisper_batch(torch, F, dtype)
        optimizer = whisper_optimizer(torch, model)
        record = {"losses": []}
        for step in range(steps):
            optimizer.zero_grad()
            loss = teacher_forced_loss(torch, F, model, mel, tokens)
            loss.backward()
            if step == 0:
                record["gradients"] = gradients(model)
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        return record
    return train


def build_whisper(**options):
    return lambda torch, nn, F: whisper(torch, nn, F, **options)


@pytest.mark.parametrize("use_sdpa", [False, True], ids=["qkv_attention", "sdpa"])
def test_whisper_trains_as_torch(use_sdpa, float64_default):
    ours, theirs = run_in_lockstep(build_whisper(float_islands=False, use_sdpa=use_sdpa), train_whisper())
    assert_same_records(ours, theirs)


def test_whisper_float32_trains_as_torch():
    """The reference text exactly (its ``.float()`` casts are no-ops in float32), eagerly, at float32's level. The
    attention keys' weights get gradients of about 4e-8 (softmax cancels most of a key's gradient), near AdamW's eps,
    so float32's rounding of them moves the update by up to 1e-4 of lr 1e-2 in either library: checked at that level."""
    ours, theirs = run_in_lockstep(build_whisper(), train_whisper())
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5, looser={"attn.key.weight": dict(rtol=2e-4, atol=2e-4)})


def test_whisper_compiled_step_as_torch(float64_default):
    train = compiled_step_training(whisper_batch, whisper_optimizer,
                                   lambda torch, nn, F, model, mel, tokens: teacher_forced_loss(torch, F, model, mel,
                                                                                                tokens))
    ours, theirs = run_in_lockstep(build_whisper(float_islands=False), train)
    assert_same_records(ours, theirs)


def greedy_decode(torch, model, mel, n_tokens, use_kv_cache):
    """decoding.py's loop (DecodingTask._main_loop with PyTorchInference, SuppressBlank, SuppressTokens and
    GreedyDecoder at temperature 0): the audio features once, then with the cache only the last token is fed
    (``tokens[:, -1:]``) and the hooks append each step's keys and values; without it the whole prefix each step.
    Returns the tokens, the summed log-probabilities and every step's filtered logits."""
    sample_begin = 1

    def suppress(tokens, logits):  # SuppressBlank, then SuppressTokens
        if tokens.shape[1] == sample_begin:
            logits[:, [BLANK, EOT]] = -np.inf
        logits[:, list(SUPPRESS_TOKENS)] = -np.inf

    def update(tokens, logits, sum_logprobs):  # GreedyDecoder.update, temperature 0
        next_tokens = logits.argmax(dim=-1)
        logprobs = F.log_softmax(logits.float(), dim=-1)
        current_logprobs = logprobs[torch.arange(logprobs.shape[0]), next_tokens]
        sum_logprobs += current_logprobs * (tokens[:, -1] != EOT)
        next_tokens[tokens[:, -1] == EOT] = EOT
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
        completed = (tokens[:, -1] == EOT).all()
        return tokens, completed

    F = libraries("kiln" if torch is kiln else "torch")[2]
    with torch.no_grad():
        audio_features = model.embed_audio(mel)
        tokens = torch.full((mel.shape[0], 1), SOT, dtype=torch.long)
        sum_logprobs = torch.zeros(mel.shape[0], device=audio_features.device)
        kv_cache, hooks = model.install_kv_cache_hooks() if use_kv_cache else (None, [])
        initial_token_length, steps = tokens.shape[-1], []
        for _ in range(n_tokens):
            fed = tokens[:, -1:] if use_kv_cache and tokens.shape[-1] > initial_token_length else tokens
            logits = model.decoder(fed, audio_features, kv_cache=kv_cache)[:, -1]
            suppress(tokens, logits)
            steps.append(array(logits))
            tokens, completed = update(tokens, logits, sum_logprobs)
            if completed or tokens.shape[-1] > N_TEXT_CTX:
                break
        for hook in hooks:
            hook.remove()
    return {"tokens": array(tokens), "sum_logprobs": array(sum_logprobs), "logits": np.stack(steps)}


def test_whisper_greedy_decoding_with_kv_cache_as_torch(float64_default):
    """After a few teacher-forced steps (the whole step one ``kiln.compile`` graph in kiln, so the decoder has
    learned something to say), the kv cache (a dict keyed by the key/value Linear modules, filled by forward hooks
    with ``torch.cat([cache[module], output], dim=1).detach()``; the cross-attention's keys saved once and read back,
    the offset from ``next(iter(kv_cache.values())).shape[1]``) decodes what the full-prefix decoding does, in kiln
    and in torch, and after the hooks are removed the model decodes as before."""
    def train_then_decode(torch, nn, F, model):
        mel, tokens = whisper_batch(torch, F)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)

        def step(mel, tokens):
            optimizer.zero_grad()
            loss = teacher_forced_loss(torch, F, model, mel, tokens)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if torch is kiln else step
        losses = [run(mel, tokens).item() for _ in range(DECODE_TRAIN_STEPS)]
        model.eval()
        return {"losses": losses, "cached": greedy_decode(torch, model, mel, N_TEXT_CTX - 1, True),
                "full": greedy_decode(torch, model, mel, N_TEXT_CTX - 1, False),
                "again": greedy_decode(torch, model, mel, N_TEXT_CTX - 1, False)}

    ours, theirs = run_in_lockstep(build_whisper(float_islands=False), train_then_decode)
    np.testing.assert_array_equal(ours["cached"]["tokens"], ours["full"]["tokens"])
    np.testing.assert_allclose(ours["cached"]["logits"], ours["full"]["logits"], rtol=1e-10, atol=1e-12)
    assert len(set(ours["cached"]["tokens"][0])) > 2, "the trained decoder says more than one token"
    assert (ours["cached"]["tokens"][:, -1] == EOT).all(), "both completed: decoding stopped at the end token"
    # GreedyDecoder.update takes F.log_softmax(logits.float()): float32 log-probabilities, at float32's level
    assert_same_records(ours, theirs, looser={"sum_logprobs": dict(rtol=1e-6, atol=0)})


LANGUAGE_TOKENS = (44, 45, 46, 47)


def detect_language(torch, model, mel):
    """decoding.py's detect_language (the tokenizer's language tokens as ``LANGUAGE_TOKENS``): one forward pass with
    the SOT token, every non-language token masked by ``logits[:, mask] = -np.inf``."""
    single = mel.ndim == 2
    if single:
        mel = mel.unsqueeze(0)

    # skip encoder forward pass if already-encoded audio features were given
    if mel.shape[-2:] != (model.dims.n_audio_ctx, model.dims.n_audio_state):
        mel = model.encoder(mel)

    # forward pass using a single token, startoftranscript
    n_audio = mel.shape[0]
    x = torch.tensor([[SOT]] * n_audio).to(mel.device)  # [n_audio, 1]
    logits = model.logits(x, mel)[:, 0]

    # collect detected languages; suppress all non-language tokens
    mask = torch.ones(logits.shape[-1], dtype=torch.bool)
    mask[list(LANGUAGE_TOKENS)] = False
    logits[:, mask] = -np.inf
    language_tokens = logits.argmax(dim=-1)
    language_token_probs = logits.softmax(dim=-1).cpu()
    language_probs = [
        {c: language_token_probs[i, j].item() for j, c in zip(LANGUAGE_TOKENS, "abcd")}
        for i in range(n_audio)
    ]

    if single:
        language_tokens = language_tokens[0]
        language_probs = language_probs[0]

    return language_tokens, language_probs


def test_whisper_detect_language_as_torch(float64_default):
    """``mask[list(...)] = False`` then ``logits[:, mask] = -np.inf`` (a bool mask after a slice), ``softmax`` over
    the rest, ``.item()`` per language; a single mel (``unsqueeze(0)``) and a batch."""
    def detect(torch, nn, F, model):
        mel = batch_mel(torch, F)
        model.eval()
        with torch.no_grad():
            tokens, probs = detect_language(torch, model, mel)
            single_token, single_probs = detect_language(torch, model, mel[1])
        return {"tokens": array(tokens), "probs": [[p[c] for c in "abcd"] for p in probs],
                "single": [int(single_token)] + [single_probs[c] for c in "abcd"]}

    ours, theirs = run_in_lockstep(build_whisper(float_islands=False), detect)
    assert np.allclose(np.sum(ours["probs"], axis=1), 1.0)
    assert_same_records(ours, theirs)


def median_filter(torch, F, x, filter_width):
    """timing.py's median_filter (CPU path)."""
    pad_width = filter_width // 2
    if x.shape[-1] <= pad_width:
        # F.pad requires the padding width to be smaller than the input dimension
        return x

    if (ndim := x.ndim) <= 2:
        # `F.pad` does not support reflect padding for 1D or 2D tensors, so we need to add batch dimensions
        x = x[None, None, :]

    assert filter_width > 0 and filter_width % 2 == 1, "`filter_width` should be an odd number"

    result = None
    x = F.pad(x, (filter_width // 2, filter_width // 2, 0, 0), mode="reflect")
    if result is None:
        # sort() is faster than torch.median (https://github.com/pytorch/pytorch/issues/51450)
        result = x.unfold(-1, filter_width, 1).sort()[0][..., filter_width // 2]

    if ndim <= 2:
        result = result[0, 0]

    return result


def dtw_cpu(x):
    """timing.py's dtw_cpu without numba (the same loops) and its backtrace."""
    N, M = x.shape
    cost = np.ones((N + 1, M + 1), dtype=np.float32) * np.inf
    trace = -np.ones((N + 1, M + 1), dtype=np.float32)
    cost[0, 0] = 0
    for j in range(1, M + 1):
        for i in range(1, N + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = x[i - 1, j - 1] + c
            trace[i, j] = t
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    trace[0, :], trace[:, 0] = 2, 1
    result = []
    while i > 0 or j > 0:
        result.append((i - 1, j - 1))
        if trace[i, j] == 0:
            i, j = i - 1, j - 1
        elif trace[i, j] == 1:
            i -= 1
        else:
            j -= 1
    result = np.array(result)[::-1, :].T
    return result


def find_alignment(torch, F, model, text_tokens, mel, num_frames, medfilt_width=3, qk_scale=1.0):
    """timing.py's find_alignment up to the DTW path (sot_sequence is ``[SOT]``; no no_timestamps token). The heads
    come from ``alignment_heads.to_dense().nonzero()``; the reference's ``.indices().T`` is checked below."""
    sot_sequence = [SOT]
    tokens = torch.tensor([*sot_sequence, *text_tokens, EOT])

    # install hooks on the cross attention layers to retrieve the attention weights
    QKs = [None] * model.dims.n_text_layer
    hooks = [
        block.cross_attn.register_forward_hook(
            lambda _, ins, outs, index=i: QKs.__setitem__(index, outs[-1][0])
        )
        for i, block in enumerate(model.decoder.blocks)
    ]

    with torch.no_grad():
        logits = model(mel.unsqueeze(0), tokens.unsqueeze(0))[0]
        sampled_logits = logits[len(sot_sequence):, :EOT]
        token_probs = sampled_logits.softmax(dim=-1)
        text_token_probs = token_probs[np.arange(len(text_tokens)), text_tokens]
        text_token_probs = text_token_probs.tolist()

    for hook in hooks:
        hook.remove()

    # heads * tokens * frames
    weights = torch.stack([QKs[_l][_h] for _l, _h in model.alignment_heads.to_dense().nonzero()])
    weights = weights[:, :, : num_frames // 2]
    weights = (weights * qk_scale).softmax(dim=-1)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = (weights - mean) / std
    weights = median_filter(torch, F, weights, medfilt_width)

    matrix = weights.mean(axis=0)
    matrix = matrix[len(sot_sequence): -1]
    text_indices, time_indices = dtw_cpu((-matrix).double().cpu().numpy())
    return {"probs": text_token_probs, "matrix": array(matrix), "path": np.stack([text_indices, time_indices])}


def test_whisper_find_alignment_as_torch(float64_default):
    """Forward hooks on the cross-attention capturing ``outs[-1][0]`` (the scores) through ``QKs.__setitem__``,
    ``token_probs[np.arange(n), text_tokens].tolist()``, ``torch.std_mean(unbiased=False)``, the median filter
    (``F.pad(mode="reflect")``, ``unfold``, ``sort()[0]``), ``mean(axis=0)`` and the DTW path, as torch's."""
    def align(torch, nn, F, model):
        model.eval()
        mel = batch_mel(torch, F)[0]
        return find_alignment(torch, F, model, [7, 12, 30], mel, num_frames=2 * N_AUDIO_CTX)

    ours, theirs = run_in_lockstep(build_whisper(float_islands=False), align)
    assert_same_records(ours, theirs)


def test_whisper_alignment_heads_dense_values_as_torch():
    """``register_buffer("alignment_heads", all_heads.to_sparse(), persistent=False)`` builds and densifies as torch's
    (kiln's ``to_sparse`` keeps the dense layout, the same values)."""
    ours, theirs = run_in_lockstep(build_whisper(), lambda torch, nn, F, model: array(model.alignment_heads))
    np.testing.assert_array_equal(ours, theirs)
    assert ours.tolist() == [[False, False], [True, True]]


def test_whisper_alignment_heads_indices_as_torch():
    """timing.py's ``model.alignment_heads.indices().T``: the buffer registered from ``to_sparse()`` keeps answering
    the COO accessors (kiln holds it dense; ``frontend/sparse_legacy.py``)."""
    ours, theirs = run_in_lockstep(build_whisper(),
                                   lambda torch, nn, F, model: array(model.alignment_heads.indices().T))
    np.testing.assert_array_equal(ours, theirs)


def test_whisper_half_precision_inference_as_torch():
    """decoding.py with ``fp16=True``: float32 weights, ``mel.half()``; ``Linear`` and ``Conv1d`` cast their weights to
    float16 in forward (``weight.to(x.dtype)``, ``super()._conv_forward``), ``LayerNorm`` runs in float32
    (``super().forward(x.float()).type(x.dtype)``), the scores' softmax in float32 (``qk.float()``), the logits
    ``.float()``; the audio features and greedy logits (with the kv cache) agree with torch's at float16's level."""
    def infer(torch, nn, F, model):
        mel = batch_mel(torch, F).half()
        model.eval()
        with torch.no_grad():
            audio_features = model.embed_audio(mel)
            logits = model.logits(torch.tensor(_tokens()), audio_features)
        assert (audio_features.dtype, logits.dtype) == (torch.float16, torch.float32)
        return {"audio_features": array(audio_features.float()), "logits": array(logits),
                "decoded": greedy_decode(torch, model, mel, N_TEXT_CTX - 1, True)["logits"]}

    ours, theirs = run_in_lockstep(build_whisper(), infer)
    assert_same_records(ours, theirs, rtol=0, atol=5e-3, looser={"logits": dict(rtol=2e-3, atol=2e-2),
                                                               "decoded": dict(rtol=2e-3, atol=2e-2)})


def test_whisper_encoder_compiled_and_onnx_as_torch(tmp_path):
    """The encoder (float32, as the reference runs it on CPU) through ``kiln.compile(fullgraph=True)`` and through
    ``kiln.onnx.export`` run by onnxruntime, against torch's eager encoder; the whole model compiled likewise."""
    onnxruntime = require("onnxruntime")

    def infer(torch, nn, F, model):
        mel, tokens = whisper_batch(torch, F)
        model.eval()
        with torch.no_grad():
            record = {"encoder": array(model.encoder(mel)), "logits": array(model(mel, tokens))}
        if torch is kiln:
            record["compiled encoder"] = array(kiln.compile(model.encoder, fullgraph=True)(mel))
            record["compiled logits"] = array(kiln.compile(model, fullgraph=True)(mel, tokens))
            kiln.onnx.export(model.encoder, (mel,), str(tmp_path / "encoder.onnx"), input_names=["mel"],
                             output_names=["audio_features"])
            session = onnxruntime.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
            record["onnx encoder"] = session.run(None, {"mel": array(mel)})[0]
        return record

    ours, theirs = run_in_lockstep(build_whisper(), infer)
    for name in ("compiled encoder", "onnx encoder"):
        np.testing.assert_allclose(ours[name], theirs["encoder"], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(ours["compiled logits"], theirs["logits"], rtol=1e-4, atol=1e-4)
    assert_same_records({key: ours[key] for key in theirs}, theirs, rtol=1e-4, atol=1e-5)


def fastspeech2_batch(torch, durations=DURATIONS, seed=0):
    """dataset.py's batch as train.py feeds it: ``(ids, raw_texts, speakers, texts, src_lens, max_src_len, mels,
    mel_lens, max_mel_len, pitches, energies, durations)``, padded with zeros (numpy, then ``torch.from_numpy``)."""
    rng = np.random.default_rng(seed)
    max_src_len = max(SRC_LENS)
    texts = np.zeros((len(SRC_LENS), max_src_len), np.int64)
    durations = np.array(durations, np.int64)
    mel_lens = durations.sum(axis=1)
    pitches, energies = np.zeros(texts.shape), np.zeros(texts.shape)
    for i, length in enumerate(SRC_LENS):
        texts[i, :length] = rng.integers(1, N_SYMBOLS, length)
        pitches[i, :length] = rng.uniform(50.0, 450.0, length)
        energies[i, :length] = rng.uniform(0.0, 2.5, length)
    mels = rng.standard_normal((len(SRC_LENS), int(mel_lens.max()), N_MEL))
    dtype = torch.get_default_dtype()
    return ([f"utt{i}" for i in range(len(SRC_LENS))], ["raw"] * len(SRC_LENS), torch.from_numpy(np.zeros(2, np.int64)),
            torch.from_numpy(texts), torch.from_numpy(np.array(SRC_LENS)), max_src_len,
            torch.from_numpy(mels).to(dtype), torch.from_numpy(mel_lens), int(mel_lens.max()),
            torch.from_numpy(pitches).to(dtype), torch.from_numpy(energies).to(dtype), torch.from_numpy(durations))


OTHER_DURATIONS = [[1, 1, 2, 1, 1], [3, 0, 2, 0, 0]]  # other lengths and masks: the compiled step traces a variant


def train_fastspeech2(steps=3, compiled=False, durations=(DURATIONS,)):
    def train(torch, nn, F, model):
        batches = [fastspeech2_batch(torch, d) for d in durations]
        optimizer = torch.optim.Adam(model.parameters(), betas=(0.9, 0.98), eps=1e-9, lr=1e-2)
        record = {"losses": []}

        def step(*batch_tensors):
            batch = batch_tensors  # as train.py: batch = to_device(batch, device)
            output = model(*(batch[2:]))
            losses = fastspeech2_loss(torch, nn, batch, output)
            total_loss = losses[0]
            optimizer.zero_grad()
            total_loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            return losses

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        for index in range(steps):
            losses = run(*batches[index % len(batches)])
            if index == 0 and not compiled:
                record["gradients"] = gradients(model)
            record["losses"].append([loss.item() for loss in losses])
        record["state"] = snapshot(model)
        return record
    return train


def build_fastspeech2(**options):
    return lambda torch, nn, F: fastspeech2(torch, nn, F, **options)


@pytest.mark.parametrize("pitch_quantization", ["log", "linear"])
def test_fastspeech2_trains_as_torch(pitch_quantization, float64_default):
    ours, theirs = run_in_lockstep(build_fastspeech2(pitch_quantization=pitch_quantization), train_fastspeech2())
    assert_same_records(ours, theirs)


def test_fastspeech2_float32_trains_as_torch():
    """As the reference trains (float32; ``duration_targets.float()`` is its own dtype here), at float32's level."""
    ours, theirs = run_in_lockstep(build_fastspeech2(), train_fastspeech2())
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5)


def test_fastspeech2_compiled_step_as_torch(float64_default):
    """The whole step (forward with the LengthRegulator's Python loop over ``predicted[i].item()``, the
    ``masked_select`` losses, backward, ``clip_grad_norm_``, Adam) one ``kiln.compile(fullgraph=True)`` graph: the
    durations, lengths and masks read from the batch are specialized and guarded, so the other batch's durations trace
    a second variant and the third step reuses the first (torch 2.13's ``torch.compile(fullgraph=True)`` compiles
    this step too, checked by hand with ``backend="eager"``)."""
    ours, theirs = run_in_lockstep(build_fastspeech2(),
                                   train_fastspeech2(compiled=True, durations=(DURATIONS, OTHER_DURATIONS)))
    assert_same_records(ours, theirs)


def synthesize(torch, nn, F, model):
    """synthesize.py's forward: no targets, the durations predicted (``torch.round(torch.exp(log_d) - 1)``, clamped,
    times ``d_control``), the LengthRegulator expanding by them and the mel mask made from its ``mel_len``; pitch and
    energy bucketized from the predictions (times their controls)."""
    model.eval()
    batch = fastspeech2_batch(torch)
    with torch.no_grad():
        model.variance_adaptor.duration_predictor.linear_layer.bias.fill_(1.0)  # predicts 1 to 3 frames a phoneme
        outputs = [model(*(batch[2:6]), p_control=p, e_control=1.0, d_control=d) for p, d in ((1.0, 1.0), (1.2, 2.0))]
    return [{"mel": array(out[1]), "durations": array(out[5]), "mel_lens": array(out[9]), "mel_masks": array(out[7]),
             "pitch": array(out[2]), "energy": array(out[3])} for out in outputs]


def test_fastspeech2_synthesis_as_torch(float64_default):
    ours, theirs = run_in_lockstep(build_fastspeech2(dropout=0.5), synthesize)
    assert len(set(ours[0]["durations"].ravel())) > 2, "the predicted durations vary"
    assert ours[1]["mel"].shape[1] > ours[0]["mel"].shape[1]
    for our, their in zip(ours, theirs):
        assert_same_records(our, their)


def test_fastspeech2_compiled_synthesis_refuses_predicted_durations_as_torch_compile(float64_default):
    """Synthesis expands by durations the model predicts: ``predicted[i].item()`` is read from the weights, not the
    inputs, so ``kiln.compile(model, fullgraph=True)`` refuses it at that line (it would trace again whenever the
    weights change); torch 2.13's ``torch.compile(fullgraph=True)`` refuses it too (``Could not extract specialized
    integer from data-dependent expression`` at ``torch.LongTensor(mel_len)``, checked by hand). Without
    ``fullgraph`` kiln runs it eagerly, with a warning, as torch's graph break does, and synthesizes torch's mels."""
    def compiled_synthesis(torch, nn, F, model):
        if torch is not kiln:
            return synthesize(torch, nn, F, model)
        with pytest.raises(kiln.compiler.errors.TraceError, match=r"expand_size = predicted\[i\]\.item\(\)"):
            synthesize(torch, nn, F, kiln.compile(model, fullgraph=True))
        with pytest.warns(UserWarning):
            return synthesize(torch, nn, F, kiln.compile(model))

    ours, theirs = run_in_lockstep(build_fastspeech2(), compiled_synthesis)
    for our, their in zip(ours, theirs):
        assert_same_records(our, their)


def test_whisper_compiled_decoder_step_with_kv_cache_as_torch(float64_default):
    """``kiln.compile`` of one decoding step whose kv cache (a dict the hooks fill) lives outside the step, as a
    compiled ``PyTorchInference.logits`` would hold it, against torch's eager cached decoding. kiln does not replay the
    hooks' stores into the cache (torch.compile does): the step is given the cache, so ``fullgraph=True`` refuses,
    naming it, and without it the step runs eagerly (warned) as torch's (``runtime/container_arguments.py``). Before,
    the first trace left its tensors in the cache and later calls gave silently wrong logits."""
    def decode(torch, nn, F, model):
        model.eval()
        mel, tokens = batch_mel(torch, F), torch.tensor(_tokens())
        with torch.no_grad():
            audio_features = model.embed_audio(mel)
            cache, hooks = model.install_kv_cache_hooks()

            def step(fed, audio_features, kv_cache):
                return model.decoder(fed, audio_features, kv_cache=kv_cache)[:, -1]

            if torch is kiln:
                with pytest.raises(kiln.compiler.errors.KilnError, match="stores into its argument 'kv_cache'"):
                    kiln.compile(step, fullgraph=True)(tokens[:, :1], audio_features, kv_cache=cache)
                assert not cache
            run = kiln.compile(step) if torch is kiln else step
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                logits = [array(run(tokens[:, i:i + 1], audio_features, kv_cache=cache)) for i in range(3)]
            assert torch is not kiln or any("stores into its argument 'kv_cache'" in str(w.message) for w in caught)
            for hook in hooks:
                hook.remove()
        return np.stack(logits)

    ours, theirs = run_in_lockstep(build_whisper(float_islands=False), decode)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
