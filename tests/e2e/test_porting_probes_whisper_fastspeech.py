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
``tests/frontend/test_bool_mask_among_indices_vs_torch.py``). Left as a strict xfail:
``alignment_heads.indices()`` (kiln's ``to_sparse()`` is a dense copy; no COO layout). A ``kiln.compile``d decoding
step given the kv cache the hooks fill gave silently wrong logits from the second call (the first trace left its
tensors in the cache); such stores into a container argument are now refused (``fullgraph=True`` raises, otherwise
the step runs eagerly, warned), where torch.compile(fullgraph=True) replays them (checked by hand).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import (array, assert_same_records, compiled_step_training, gradients, run_in_lockstep,
                                snapshot)
from oracles import libraries, require

# Whisper, tiny: 16 mel bins, 8 audio frames after the stride-2 conv, 16 channels, 2 heads, 2 layers, 50 tokens.
N_MELS, N_AUDIO_CTX, N_STATE, N_HEAD, N_LAYER, N_VOCAB, N_TEXT_CTX = 16, 8, 16, 2, 2, 50, 6
N_FFT, HOP_LENGTH, N_SAMPLES = 32, 8, 128  # 128 samples -> 17 STFT frames, the last dropped -> 16 mel frames
SOT, BATCH = 1, 2
EOT, BLANK, SUPPRESS_TOKENS = 43, 2, (0, 5)  # 43 ends the second training sentence
DECODE_TRAIN_STEPS = 10


@dataclass
class ModelDimensions:
    n_mels: int = N_MELS
    n_audio_ctx: int = N_AUDIO_CTX
    n_audio_state: int = N_STATE
    n_audio_head: int = N_HEAD
    n_audio_layer: int = N_LAYER
    n_vocab: int = N_VOCAB
    n_text_ctx: int = N_TEXT_CTX
    n_text_state: int = N_STATE
    n_text_head: int = N_HEAD
    n_text_layer: int = N_LAYER


def mel_filters(n_mels, sr=16000, n_fft=N_FFT):
    """A triangular mel filterbank in NumPy (audio.py loads librosa's from mel_filters.npz; same shape and role)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    lower, center, upper = mel_points[:-2, None], mel_points[1:-1, None], mel_points[2:, None]
    rising = (fft_freqs[None] - lower) / (center - lower)
    falling = (upper - fft_freqs[None]) / (upper - center)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def whisper(torch, nn, F, float_islands=True, use_sdpa=False):
    """model.py as written (Tensor annotations dropped). ``float_islands`` False keeps the reference's ``x.float()``
    casts (LayerNorm, the attention scores, the logits) in the input's dtype: the one change a float64 run makes, since
    ``.float()`` of a float64 tensor rounds to float32 in both libraries."""
    from typing import Optional

    def upcast(x):
        return x.float() if float_islands else x

    class LayerNorm(nn.LayerNorm):
        def forward(self, x):
            return super().forward(upcast(x)).type(x.dtype)

    class Linear(nn.Linear):
        def forward(self, x):
            return F.linear(
                x,
                self.weight.to(x.dtype),
                None if self.bias is None else self.bias.to(x.dtype),
            )

    class Conv1d(nn.Conv1d):
        def _conv_forward(self, x, weight, bias):
            return super()._conv_forward(
                x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype)
            )

    def sinusoids(length, channels, max_timescale=10000):
        """Returns sinusoids for positional embedding"""
        assert channels % 2 == 0
        log_timescale_increment = np.log(max_timescale) / (channels // 2 - 1)
        inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
        scaled_time = torch.arange(length)[:, np.newaxis] * inv_timescales[np.newaxis, :]
        return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)

    class MultiHeadAttention(nn.Module):
        def __init__(self, n_state: int, n_head: int):
            super().__init__()
            self.n_head = n_head
            self.query = Linear(n_state, n_state)
            self.key = Linear(n_state, n_state, bias=False)
            self.value = Linear(n_state, n_state)
            self.out = Linear(n_state, n_state)

        def forward(self, x, xa=None, mask=None, kv_cache: Optional[dict] = None):
            q = self.query(x)

            if kv_cache is None or xa is None or self.key not in kv_cache:
                # hooks, if installed (i.e. kv_cache is not None), will prepend the cached kv tensors;
                # otherwise, perform key/value projections for self- or cross-attention as usual.
                k = self.key(x if xa is None else xa)
                v = self.value(x if xa is None else xa)
            else:
                # for cross-attention, calculate keys and values once and reuse in subsequent calls.
                k = kv_cache[self.key]
                v = kv_cache[self.value]

            wv, qk = self.qkv_attention(q, k, v, mask)
            return self.out(wv), qk

        def qkv_attention(self, q, k, v, mask=None):
            n_batch, n_ctx, n_state = q.shape
            scale = (n_state // self.n_head) ** -0.25
            q = q.view(*q.shape[:2], self.n_head, -1).permute(0, 2, 1, 3)
            k = k.view(*k.shape[:2], self.n_head, -1).permute(0, 2, 1, 3)
            v = v.view(*v.shape[:2], self.n_head, -1).permute(0, 2, 1, 3)

            if use_sdpa:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=mask is not None and n_ctx > 1)
                out = a.permute(0, 2, 1, 3).flatten(start_dim=2)
                qk = None
            else:
                qk = (q * scale) @ (k * scale).transpose(-1, -2)
                if mask is not None:
                    qk = qk + mask[:n_ctx, :n_ctx]
                qk = upcast(qk)

                w = F.softmax(qk, dim=-1).to(q.dtype)
                out = (w @ v).permute(0, 2, 1, 3).flatten(start_dim=2)
                qk = qk.detach()

            return out, qk

    class ResidualAttentionBlock(nn.Module):
        def __init__(self, n_state: int, n_head: int, cross_attention: bool = False):
            super().__init__()

            self.attn = MultiHeadAttention(n_state, n_head)
            self.attn_ln = LayerNorm(n_state)

            self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
            self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None

            n_mlp = n_state * 4
            self.mlp = nn.Sequential(Linear(n_state, n_mlp), nn.GELU(), Linear(n_mlp, n_state))
            self.mlp_ln = LayerNorm(n_state)

        def forward(self, x, xa=None, mask=None, kv_cache: Optional[dict] = None):
            x = x + self.attn(self.attn_ln(x), mask=mask, kv_cache=kv_cache)[0]
            if self.cross_attn:
                x = x + self.cross_attn(self.cross_attn_ln(x), xa, kv_cache=kv_cache)[0]
            x = x + self.mlp(self.mlp_ln(x))
            return x

    class AudioEncoder(nn.Module):
        def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
            super().__init__()
            self.conv1 = Conv1d(n_mels, n_state, kernel_size=3, padding=1)
            self.conv2 = Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
            self.register_buffer("positional_embedding", sinusoids(n_ctx, n_state))

            self.blocks = nn.ModuleList([ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer)])
            self.ln_post = LayerNorm(n_state)

        def forward(self, x):
            """
            x : torch.Tensor, shape = (batch_size, n_mels, n_ctx)
                the mel spectrogram of the audio
            """
            x = F.gelu(self.conv1(x))
            x = F.gelu(self.conv2(x))
            x = x.permute(0, 2, 1)

            assert x.shape[1:] == self.positional_embedding.shape, "incorrect audio shape"
            x = (x + self.positional_embedding).to(x.dtype)

            for block in self.blocks:
                x = block(x)

            x = self.ln_post(x)
            return x

    class TextDecoder(nn.Module):
        def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
            super().__init__()

            self.token_embedding = nn.Embedding(n_vocab, n_state)
            self.positional_embedding = nn.Parameter(torch.empty(n_ctx, n_state))

            self.blocks = nn.ModuleList(
                [ResidualAttentionBlock(n_state, n_head, cross_attention=True) for _ in range(n_layer)]
            )
            self.ln = LayerNorm(n_state)

            mask = torch.empty(n_ctx, n_ctx).fill_(-np.inf).triu_(1)
            self.register_buffer("mask", mask, persistent=False)

        def forward(self, x, xa, kv_cache: Optional[dict] = None):
            """
            x : torch.LongTensor, shape = (batch_size, <= n_ctx)
                the text tokens
            xa : torch.Tensor, shape = (batch_size, n_audio_ctx, n_audio_state)
                the encoded audio features to be attended on
            """
            offset = next(iter(kv_cache.values())).shape[1] if kv_cache else 0
            x = self.token_embedding(x) + self.positional_embedding[offset: offset + x.shape[-1]]
            x = x.to(xa.dtype)

            for block in self.blocks:
                x = block(x, xa, mask=self.mask, kv_cache=kv_cache)

            x = self.ln(x)
            logits = upcast(x @ torch.transpose(self.token_embedding.weight.to(x.dtype), 0, 1))

            return logits

    class Whisper(nn.Module):
        def __init__(self, dims: ModelDimensions):
            super().__init__()
            self.dims = dims
            self.encoder = AudioEncoder(
                self.dims.n_mels, self.dims.n_audio_ctx, self.dims.n_audio_state, self.dims.n_audio_head,
                self.dims.n_audio_layer,
            )
            self.decoder = TextDecoder(
                self.dims.n_vocab, self.dims.n_text_ctx, self.dims.n_text_state, self.dims.n_text_head,
                self.dims.n_text_layer,
            )
            # use the last half among the decoder layers for time alignment by default;
            # to use a specific set of heads, see `set_alignment_heads()` below.
            all_heads = torch.zeros(self.dims.n_text_layer, self.dims.n_text_head, dtype=torch.bool)
            all_heads[self.dims.n_text_layer // 2:] = True
            self.register_buffer("alignment_heads", all_heads.to_sparse(), persistent=False)

        def embed_audio(self, mel):
            return self.encoder(mel)

        def logits(self, tokens, audio_features):
            return self.decoder(tokens, audio_features)

        def forward(self, mel, tokens):
            return self.decoder(tokens, self.encoder(mel))

        def install_kv_cache_hooks(self, cache: Optional[dict] = None):
            cache = {**cache} if cache is not None else {}
            hooks = []

            def save_to_cache(module, _, output):
                if module not in cache or output.shape[1] > self.dims.n_text_ctx:
                    # save as-is, for the first token or cross attention
                    cache[module] = output
                else:
                    cache[module] = torch.cat([cache[module], output], dim=1).detach()
                return cache[module]

            def install_hooks(layer: nn.Module):
                if isinstance(layer, MultiHeadAttention):
                    hooks.append(layer.key.register_forward_hook(save_to_cache))
                    hooks.append(layer.value.register_forward_hook(save_to_cache))

            self.decoder.apply(install_hooks)
            return cache, hooks

    model = Whisper(ModelDimensions())
    nn.init.normal_(model.decoder.positional_embedding, std=0.1)  # torch.empty until load_state_dict in the reference
    return model


def log_mel_spectrogram(torch, F, audio, n_mels=N_MELS, padding=0):
    """audio.py's log_mel_spectrogram (N_FFT, HOP_LENGTH tiny; the filterbank from ``mel_filters`` above)."""
    if not torch.is_tensor(audio):
        audio = torch.from_numpy(audio)
    if padding > 0:
        audio = F.pad(audio, (0, padding))
    window = torch.hann_window(N_FFT).to(audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2

    filters = torch.from_numpy(mel_filters(n_mels)).to(audio.device, audio.dtype)  # float64 audio: float64 filters
    mel_spec = filters @ magnitudes

    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    log_spec = (log_spec + 4.0) / 4.0
    return log_spec


def pad_or_trim(torch, F, array, length=N_SAMPLES, *, axis=-1):
    """audio.py's pad_or_trim (torch branch)."""
    if array.shape[axis] > length:
        array = array.index_select(dim=axis, index=torch.arange(length, device=array.device))
    if array.shape[axis] < length:
        pad_widths = [(0, 0)] * array.ndim
        pad_widths[axis] = (0, length - array.shape[axis])
        array = F.pad(array, [pad for sizes in pad_widths[::-1] for pad in sizes])
    return array


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
    """The reference text exactly (its ``.float()`` casts are no-ops in float32), eagerly, at float32's level."""
    ours, theirs = run_in_lockstep(build_whisper(), train_whisper())
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5)


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
    come from ``alignment_heads.to_dense().nonzero()``: the reference's ``.indices().T`` is the strict xfail below."""
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


@pytest.mark.xfail(strict=True, raises=AttributeError,
                   reason="kiln has one tensor layout, dense: to_sparse() is a dense copy, so timing.py's "
                          "model.alignment_heads.indices().T (a sparse COO's coordinates) has no indices(); a COO "
                          "tensor type for to_sparse() is more than this probe's fix")
def test_whisper_alignment_heads_indices_as_torch():
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


# FastSpeech 2, tiny: 10 symbols, 8 channels, 6 mel bins, 5 pitch and energy bins.
N_SYMBOLS, HIDDEN, N_MEL, N_BINS, KERNEL = 10, 8, 6, 5, 3
PITCH_STATS, ENERGY_STATS = (60.0, 400.0), (0.1, 2.0)
SRC_LENS, DURATIONS = [5, 3], [[2, 1, 3, 0, 2], [1, 2, 2, 0, 0]]  # a real phoneme of duration 0 expands to nothing


def fastspeech2(torch, nn, F, dropout=0.0, pitch_quantization="log"):
    """model/modules.py's VarianceAdaptor, LengthRegulator, VariancePredictor and Conv and utils/tools.py's
    ``get_mask_from_lengths`` and ``pad`` as written; the Transformer encoder and decoder and the PostNet are one
    masked ``Conv`` each (same masking: ``masked_fill(mask.unsqueeze(-1), 0)``). ``dropout`` 0 in the lockstep
    training (the two libraries draw different masks); the reference's 0.5 in the synthesis (eval) runs."""
    from collections import OrderedDict

    device = "cpu"

    def get_mask_from_lengths(lengths, max_len=None):
        batch_size = lengths.shape[0]
        if max_len is None:
            max_len = torch.max(lengths).item()

        ids = torch.arange(0, max_len).unsqueeze(0).expand(batch_size, -1).to(device)
        mask = ids >= lengths.unsqueeze(1).expand(-1, max_len)

        return mask

    def pad(input_ele, mel_max_length=None):
        if mel_max_length:
            max_len = mel_max_length
        else:
            max_len = max([input_ele[i].size(0) for i in range(len(input_ele))])

        out_list = list()
        for i, batch in enumerate(input_ele):
            if len(batch.shape) == 1:
                one_batch_padded = F.pad(batch, (0, max_len - batch.size(0)), "constant", 0.0)
            elif len(batch.shape) == 2:
                one_batch_padded = F.pad(batch, (0, 0, 0, max_len - batch.size(0)), "constant", 0.0)
            out_list.append(one_batch_padded)
        out_padded = torch.stack(out_list)
        return out_padded

    class Conv(nn.Module):
        """Convolution Module"""

        def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, padding=0, dilation=1, bias=True,
                     w_init="linear"):
            super(Conv, self).__init__()

            self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, bias=bias)

        def forward(self, x):
            x = x.contiguous().transpose(1, 2)
            x = self.conv(x)
            x = x.contiguous().transpose(1, 2)

            return x

    class VariancePredictor(nn.Module):
        """Duration, Pitch and Energy Predictor"""

        def __init__(self):
            super(VariancePredictor, self).__init__()

            self.input_size = HIDDEN
            self.filter_size = HIDDEN
            self.kernel = KERNEL
            self.conv_output_size = HIDDEN
            self.dropout = dropout

            self.conv_layer = nn.Sequential(
                OrderedDict(
                    [
                        ("conv1d_1", Conv(self.input_size, self.filter_size, kernel_size=self.kernel,
                                          padding=(self.kernel - 1) // 2)),
                        ("relu_1", nn.ReLU()),
                        ("layer_norm_1", nn.LayerNorm(self.filter_size)),
                        ("dropout_1", nn.Dropout(self.dropout)),
                        ("conv1d_2", Conv(self.filter_size, self.filter_size, kernel_size=self.kernel, padding=1)),
                        ("relu_2", nn.ReLU()),
                        ("layer_norm_2", nn.LayerNorm(self.filter_size)),
                        ("dropout_2", nn.Dropout(self.dropout)),
                    ]
                )
            )

            self.linear_layer = nn.Linear(self.conv_output_size, 1)

        def forward(self, encoder_output, mask):
            out = self.conv_layer(encoder_output)
            out = self.linear_layer(out)
            out = out.squeeze(-1)

            if mask is not None:
                out = out.masked_fill(mask, 0.0)

            return out

    class LengthRegulator(nn.Module):
        """Length Regulator"""

        def __init__(self):
            super(LengthRegulator, self).__init__()

        def LR(self, x, duration, max_len):
            output = list()
            mel_len = list()
            for batch, expand_target in zip(x, duration):
                expanded = self.expand(batch, expand_target)
                output.append(expanded)
                mel_len.append(expanded.shape[0])

            if max_len is not None:
                output = pad(output, max_len)
            else:
                output = pad(output)

            return output, torch.LongTensor(mel_len).to(device)

        def expand(self, batch, predicted):
            out = list()

            for i, vec in enumerate(batch):
                expand_size = predicted[i].item()
                out.append(vec.expand(max(int(expand_size), 0), -1))
            out = torch.cat(out, 0)

            return out

        def forward(self, x, duration, max_len):
            output, mel_len = self.LR(x, duration, max_len)
            return output, mel_len

    class VarianceAdaptor(nn.Module):
        """Variance Adaptor"""

        def __init__(self):
            super(VarianceAdaptor, self).__init__()
            self.duration_predictor = VariancePredictor()
            self.length_regulator = LengthRegulator()
            self.pitch_predictor = VariancePredictor()
            self.energy_predictor = VariancePredictor()

            self.pitch_feature_level = "phoneme_level"
            self.energy_feature_level = "phoneme_level"

            energy_quantization = "linear"
            n_bins = N_BINS
            pitch_min, pitch_max = PITCH_STATS
            energy_min, energy_max = ENERGY_STATS

            if pitch_quantization == "log":
                self.pitch_bins = nn.Parameter(
                    torch.exp(torch.linspace(np.log(pitch_min), np.log(pitch_max), n_bins - 1)),
                    requires_grad=False,
                )
            else:
                self.pitch_bins = nn.Parameter(
                    torch.linspace(pitch_min, pitch_max, n_bins - 1),
                    requires_grad=False,
                )
            if energy_quantization == "log":
                self.energy_bins = nn.Parameter(
                    torch.exp(torch.linspace(np.log(energy_min), np.log(energy_max), n_bins - 1)),
                    requires_grad=False,
                )
            else:
                self.energy_bins = nn.Parameter(
                    torch.linspace(energy_min, energy_max, n_bins - 1),
                    requires_grad=False,
                )

            self.pitch_embedding = nn.Embedding(n_bins, HIDDEN)
            self.energy_embedding = nn.Embedding(n_bins, HIDDEN)

        def get_pitch_embedding(self, x, target, mask, control):
            prediction = self.pitch_predictor(x, mask)
            if target is not None:
                embedding = self.pitch_embedding(torch.bucketize(target, self.pitch_bins))
            else:
                prediction = prediction * control
                embedding = self.pitch_embedding(torch.bucketize(prediction, self.pitch_bins))
            return prediction, embedding

        def get_energy_embedding(self, x, target, mask, control):
            prediction = self.energy_predictor(x, mask)
            if target is not None:
                embedding = self.energy_embedding(torch.bucketize(target, self.energy_bins))
            else:
                prediction = prediction * control
                embedding = self.energy_embedding(torch.bucketize(prediction, self.energy_bins))
            return prediction, embedding

        def forward(self, x, src_mask, mel_mask=None, max_len=None, pitch_target=None, energy_target=None,
                    duration_target=None, p_control=1.0, e_control=1.0, d_control=1.0):

            log_duration_prediction = self.duration_predictor(x, src_mask)
            if self.pitch_feature_level == "phoneme_level":
                pitch_prediction, pitch_embedding = self.get_pitch_embedding(x, pitch_target, src_mask, p_control)
                x = x + pitch_embedding
            if self.energy_feature_level == "phoneme_level":
                energy_prediction, energy_embedding = self.get_energy_embedding(x, energy_target, src_mask, p_control)
                x = x + energy_embedding

            if duration_target is not None:
                x, mel_len = self.length_regulator(x, duration_target, max_len)
                duration_rounded = duration_target
            else:
                duration_rounded = torch.clamp(
                    (torch.round(torch.exp(log_duration_prediction) - 1) * d_control),
                    min=0,
                )
                x, mel_len = self.length_regulator(x, duration_rounded, max_len)
                mel_mask = get_mask_from_lengths(mel_len)

            return (x, pitch_prediction, energy_prediction, log_duration_prediction, duration_rounded, mel_len,
                    mel_mask)

    class MaskedConvStack(nn.Module):
        """Stands in for the Transformer Encoder/Decoder (FFT blocks) and the PostNet: a Conv, ReLU, masked."""

        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.conv = Conv(in_channels, out_channels, kernel_size=KERNEL, padding=(KERNEL - 1) // 2)

        def forward(self, x, mask):
            return F.relu(self.conv(x)).masked_fill(mask.unsqueeze(-1), 0)

    class FastSpeech2(nn.Module):
        """FastSpeech2"""

        def __init__(self):
            super(FastSpeech2, self).__init__()
            self.src_word_emb = nn.Embedding(N_SYMBOLS, HIDDEN, padding_idx=0)
            self.encoder = MaskedConvStack(HIDDEN, HIDDEN)
            self.variance_adaptor = VarianceAdaptor()
            self.decoder = MaskedConvStack(HIDDEN, HIDDEN)
            self.mel_linear = nn.Linear(HIDDEN, N_MEL)
            self.postnet = Conv(N_MEL, N_MEL, kernel_size=5, padding=2)
            self.speaker_emb = None

        def forward(self, speakers, texts, src_lens, max_src_len, mels=None, mel_lens=None, max_mel_len=None,
                    p_targets=None, e_targets=None, d_targets=None, p_control=1.0, e_control=1.0, d_control=1.0):
            src_masks = get_mask_from_lengths(src_lens, max_src_len)
            mel_masks = (
                get_mask_from_lengths(mel_lens, max_mel_len)
                if mel_lens is not None
                else None
            )

            output = self.encoder(self.src_word_emb(texts), src_masks)

            (output, p_predictions, e_predictions, log_d_predictions, d_rounded, mel_lens, mel_masks) = \
                self.variance_adaptor(output, src_masks, mel_masks, max_mel_len, p_targets, e_targets, d_targets,
                                      p_control, e_control, d_control)

            output = self.decoder(output, mel_masks)
            output = self.mel_linear(output)

            postnet_output = self.postnet(output) + output

            return (output, postnet_output, p_predictions, e_predictions, log_d_predictions, d_rounded, src_masks,
                    mel_masks, src_lens, mel_lens)

    return FastSpeech2()


def fastspeech2_loss(torch, nn, inputs, predictions):
    """model/loss.py's FastSpeech2Loss.forward (phoneme-level pitch and energy)."""
    mse_loss, mae_loss = nn.MSELoss(), nn.L1Loss()
    (mel_targets, _, _, pitch_targets, energy_targets, duration_targets) = inputs[6:]
    (mel_predictions, postnet_mel_predictions, pitch_predictions, energy_predictions, log_duration_predictions, _,
     src_masks, mel_masks, _, _) = predictions
    src_masks = ~src_masks
    mel_masks = ~mel_masks
    log_duration_targets = torch.log(duration_targets.float() + 1)
    mel_targets = mel_targets[:, : mel_masks.shape[1], :]
    mel_masks = mel_masks[:, :mel_masks.shape[1]]

    log_duration_targets.requires_grad = False
    pitch_targets.requires_grad = False
    energy_targets.requires_grad = False
    mel_targets.requires_grad = False

    pitch_predictions = pitch_predictions.masked_select(src_masks)
    pitch_targets = pitch_targets.masked_select(src_masks)
    energy_predictions = energy_predictions.masked_select(src_masks)
    energy_targets = energy_targets.masked_select(src_masks)

    log_duration_predictions = log_duration_predictions.masked_select(src_masks)
    log_duration_targets = log_duration_targets.masked_select(src_masks)

    mel_predictions = mel_predictions.masked_select(mel_masks.unsqueeze(-1))
    postnet_mel_predictions = postnet_mel_predictions.masked_select(mel_masks.unsqueeze(-1))
    mel_targets = mel_targets.masked_select(mel_masks.unsqueeze(-1))

    mel_loss = mae_loss(mel_predictions, mel_targets)
    postnet_mel_loss = mae_loss(postnet_mel_predictions, mel_targets)

    pitch_loss = mse_loss(pitch_predictions, pitch_targets)
    energy_loss = mse_loss(energy_predictions, energy_targets)
    duration_loss = mse_loss(log_duration_predictions, log_duration_targets)

    total_loss = mel_loss + postnet_mel_loss + duration_loss + pitch_loss + energy_loss
    return (total_loss, mel_loss, postnet_mel_loss, pitch_loss, energy_loss, duration_loss)


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
