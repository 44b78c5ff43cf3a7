"""Whisper, tiny, as openai/whisper writes it (model.py's ``Whisper`` with its ``ModelDimensions``, audio.py's
``log_mel_spectrogram`` and ``pad_or_trim`` with a NumPy mel filterbank), written once for ``torch`` being torch or
kiln: the program of ``test_porting_probes_whisper_fastspeech.py``, whose docstring says what it covers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
