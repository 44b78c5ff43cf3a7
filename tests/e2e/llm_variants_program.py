"""Four decoder LLMs as Hugging Face ``transformers`` modeling files write them (``torch`` is ``torch`` or ``kiln``),
tiny configs written out, no HF import: Mistral (sliding-window causal mask, grouped-query attention), BLOOM (ALiBi,
``baddbmm`` scores, a left-padded batch), GPT-NeoX (parallel residual, partial rotary, fused ``query_key_value``) and
Gemma (``1 + weight`` RMSNorm, scaled embeddings, GeGLU, tied embeddings, final-logit soft-capping). Each forward
takes ``past_key_values`` (a tuple of ``(key, value)`` per layer) and returns ``(loss, logits, past_key_values)`` as
``return_dict=False`` does. The generation helpers (greedy decoding over that tuple, ``RepetitionPenaltyLogitsProcessor``,
``TopKLogitsWarper``, ``TopPLogitsWarper``) and the training loop (AdamW, ``get_cosine_schedule_with_warmup``'s
``LambdaLR``, ``clip_grad_norm_``) are HF's too.

``upcast=True`` keeps the reference's float32 islands (RMSNorm in float32, ``softmax(dtype=torch.float32)``,
``inv_freq``'s ``.float()``, ``logits.float()``); ``upcast=False`` computes them in the default dtype, so that a float64
run is float64 throughout (the only change to the reference text)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Optional


@dataclass
class Config:
    family: str = "mistral"
    vocab_size: int = 13
    hidden_size: int = 16
    intermediate_size: int = 24
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 4
    sliding_window: Optional[int] = 3
    max_position_embeddings: int = 16
    rms_norm_eps: float = 1e-6
    layer_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rotary_pct: float = 0.5
    use_parallel_residual: bool = True
    final_logit_softcapping: Optional[float] = None
    gradient_checkpointing: bool = False
    padding_side: Optional[str] = None  # the batches' padding (the tokenizer's padding_side), and so an attention_mask
    initializer_range: float = 0.1
    upcast: bool = True


def rotary_helpers(torch, nn, config: Config):
    """``MistralRotaryEmbedding`` (cos/sin caches as non-persistent buffers), ``rotate_half``,
    ``apply_rotary_pos_emb`` and ``repeat_kv``: the functions the Llama-family files copy from each other."""
    upcast = (lambda x: x.float()) if config.upcast else (lambda x: x)

    class RotaryEmbedding(nn.Module):
        def __init__(self, dim, max_position_embeddings=2048, base=10000, device=None):
            super().__init__()
            self.dim = dim
            self.max_position_embeddings = max_position_embeddings
            self.base = base
            inv_freq = 1.0 / (self.base ** (upcast(torch.arange(0, self.dim, 2)).to(device) / self.dim))
            self.register_buffer("inv_freq", inv_freq, persistent=False)
            self._set_cos_sin_cache(seq_len=max_position_embeddings, device=self.inv_freq.device,
                                    dtype=torch.get_default_dtype())

        def _set_cos_sin_cache(self, seq_len, device, dtype):
            self.max_seq_len_cached = seq_len
            t = torch.arange(self.max_seq_len_cached, device=device, dtype=self.inv_freq.dtype)
            freqs = torch.outer(t, self.inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            self.register_buffer("cos_cached", emb.cos().to(dtype), persistent=False)
            self.register_buffer("sin_cached", emb.sin().to(dtype), persistent=False)

        def forward(self, x, seq_len=None):
            if seq_len > self.max_seq_len_cached:
                self._set_cos_sin_cache(seq_len=seq_len, device=x.device, dtype=x.dtype)
            return (self.cos_cached[:seq_len].to(dtype=x.dtype), self.sin_cached[:seq_len].to(dtype=x.dtype))

    def rotate_half(x):
        x1 = x[..., : x.shape[-1] // 2]
        x2 = x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
        cos = cos[position_ids].unsqueeze(unsqueeze_dim)
        sin = sin[position_ids].unsqueeze(unsqueeze_dim)
        q_embed = (q * cos) + (rotate_half(q) * sin)
        k_embed = (k * cos) + (rotate_half(k) * sin)
        return q_embed, k_embed

    def repeat_kv(hidden_states, n_rep: int):
        batch, num_key_value_heads, slen, head_dim = hidden_states.shape
        if n_rep == 1:
            return hidden_states
        hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
        return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)

    return RotaryEmbedding, apply_rotary_pos_emb, repeat_kv, rotate_half


def causal_lm_loss(logits, labels, vocab_size, nn):
    """``LlamaForCausalLM``'s loss: shift so that tokens < n predict n, ``CrossEntropyLoss`` (``ignore_index=-100``)."""
    shift_logits = logits[..., :-1, :].contiguous()
    shift_labels = labels[..., 1:].contiguous()
    loss_fct = nn.CrossEntropyLoss()
    shift_logits = shift_logits.view(-1, vocab_size)
    shift_labels = shift_labels.view(-1)
    return loss_fct(shift_logits, shift_labels)


def init_weights(nn, config: Config, module):
    """``PreTrainedModel._init_weights``: normal(0, initializer_range) Linear and Embedding weights, zero biases."""
    std = config.initializer_range
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(mean=0.0, std=std)
        if module.bias is not None:
            module.bias.data.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.data.normal_(mean=0.0, std=std)


def mistral_or_gemma(torch, nn, F, config: Config):
    """``MistralForCausalLM`` (``family="mistral"``) or ``GemmaForCausalLM`` (``family="gemma"``): the Llama layout
    with each file's own norm, MLP activation, mask, embedding scale, tying and soft-capping."""
    gemma = config.family == "gemma"
    RotaryEmbedding, apply_rotary_pos_emb, repeat_kv, rotate_half = rotary_helpers(torch, nn, config)
    island = torch.float32 if config.upcast else torch.get_default_dtype()

    class MistralRMSNorm(nn.Module):
        def __init__(self, hidden_size, eps=1e-6):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(hidden_size))
            self.variance_epsilon = eps

        def forward(self, hidden_states):
            input_dtype = hidden_states.dtype
            hidden_states = hidden_states.to(island)
            variance = hidden_states.pow(2).mean(-1, keepdim=True)
            hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
            return self.weight * hidden_states.to(input_dtype)

    class GemmaRMSNorm(nn.Module):
        def __init__(self, dim: int, eps: float = 1e-6):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.zeros(dim))

        def _norm(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

        def forward(self, x):
            output = self._norm(x.to(island))
            output = output * (1.0 + self.weight.to(island))
            return output.type_as(x)

    RMSNorm = GemmaRMSNorm if gemma else MistralRMSNorm

    class GemmaRotaryEmbedding(nn.Module):
        """Gemma's: ``inv_freq`` made at the first call, cos/sin from ``position_ids`` by a matmul with autocast off."""

        def __init__(self, dim, max_position_embeddings=2048, base=10000, device=None):
            super().__init__()
            self.dim = dim
            self.max_position_embeddings = max_position_embeddings
            self.base = base
            self.register_buffer("inv_freq", None, persistent=False)

        @torch.no_grad()
        def forward(self, x, position_ids, seq_len=None):
            # x: [bs, num_attention_heads, seq_len, head_size]
            if self.inv_freq is None:
                self.inv_freq = 1.0 / (
                    self.base ** (torch.arange(0, self.dim, 2, dtype=torch.int64, device=x.device).to(island) / self.dim))
            inv_freq_expanded = self.inv_freq[None, :, None].to(island).expand(position_ids.shape[0], -1, 1)
            position_ids_expanded = position_ids[:, None, :].to(island)
            device_type = x.device.type
            device_type = device_type if isinstance(device_type, str) and device_type != "mps" else "cpu"
            with torch.autocast(device_type=device_type, enabled=False):
                freqs = (inv_freq_expanded.to(island) @ position_ids_expanded.to(island)).transpose(1, 2)
                emb = torch.cat((freqs, freqs), dim=-1)
                cos = emb.cos()
                sin = emb.sin()
            return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)

    def apply_gemma_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
        cos = cos.unsqueeze(unsqueeze_dim)
        sin = sin.unsqueeze(unsqueeze_dim)
        q_embed = (q * cos) + (rotate_half(q) * sin)
        k_embed = (k * cos) + (rotate_half(k) * sin)
        return q_embed, k_embed

    class MLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
            self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
            self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
            self.act_fn = partial(F.gelu, approximate="tanh") if gemma else nn.SiLU()

        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    class Attention(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.hidden_size = config.hidden_size
            self.num_heads = config.num_attention_heads
            self.head_dim = config.head_dim
            self.num_key_value_heads = config.num_key_value_heads
            self.num_key_value_groups = self.num_heads // self.num_key_value_heads
            self.q_proj = nn.Linear(self.hidden_size, self.num_heads * self.head_dim, bias=False)
            self.k_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=False)
            self.v_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=False)
            self.o_proj = nn.Linear(self.num_heads * self.head_dim, self.hidden_size, bias=False)
            self.rotary_emb = (GemmaRotaryEmbedding if gemma else RotaryEmbedding)(
                self.head_dim, max_position_embeddings=config.max_position_embeddings, base=config.rope_theta)

        def forward(self, hidden_states, attention_mask, position_ids, past_key_value=None, use_cache=False):
            bsz, q_len, _ = hidden_states.size()
            query_states = self.q_proj(hidden_states)
            key_states = self.k_proj(hidden_states)
            value_states = self.v_proj(hidden_states)
            query_states = query_states.view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
            key_states = key_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
            value_states = value_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
            kv_seq_len = key_states.shape[-2]
            if past_key_value is not None:
                kv_seq_len += past_key_value[0].shape[-2]
            if gemma:
                cos, sin = self.rotary_emb(value_states, position_ids, seq_len=None)
                query_states, key_states = apply_gemma_rotary_pos_emb(query_states, key_states, cos, sin, None)
            else:
                cos, sin = self.rotary_emb(value_states, seq_len=kv_seq_len)
                query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, position_ids)
            if past_key_value is not None:
                key_states = torch.cat([past_key_value[0], key_states], dim=2)
                value_states = torch.cat([past_key_value[1], value_states], dim=2)
            past_key_value = (key_states, value_states) if use_cache else None
            key_states = repeat_kv(key_states, self.num_key_value_groups)
            value_states = repeat_kv(value_states, self.num_key_value_groups)
            attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)
            attn_weights = attn_weights + attention_mask
            attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=island).to(query_states.dtype)
            attn_output = torch.matmul(attn_weights, value_states)
            attn_output = attn_output.transpose(1, 2).contiguous()
            attn_output = attn_output.reshape(bsz, q_len, self.num_heads * self.head_dim)
            return self.o_proj(attn_output), past_key_value

    class DecoderLayer(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.self_attn = Attention(config)
            self.mlp = MLP(config)
            self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

        def forward(self, hidden_states, attention_mask, position_ids, past_key_value=None, use_cache=False):
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
            hidden_states, present_key_value = self.self_attn(hidden_states, attention_mask, position_ids,
                                                              past_key_value, use_cache)
            hidden_states = residual + hidden_states
            residual = hidden_states
            hidden_states = self.post_attention_layernorm(hidden_states)
            hidden_states = self.mlp(hidden_states)
            hidden_states = residual + hidden_states
            return hidden_states, present_key_value

    def make_causal_mask(bsz, tgt_len, dtype, device, past_key_values_length=0, sliding_window=None):
        """The additive causal mask (``finfo.min`` above the diagonal), banded to ``sliding_window`` keys."""
        mask = torch.full((tgt_len, tgt_len + past_key_values_length), torch.finfo(dtype).min, device=device)
        mask = torch.triu(mask, diagonal=past_key_values_length + 1).to(dtype)
        if sliding_window is not None:
            context_mask = torch.tril(torch.ones_like(mask, dtype=torch.bool),
                                      diagonal=past_key_values_length - sliding_window)
            mask.masked_fill_(context_mask, torch.finfo(dtype).min)
        return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_key_values_length)

    class Model(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
            self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.num_hidden_layers)])
            self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.gradient_checkpointing = False

        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
            if gradient_checkpointing_kwargs is None:
                gradient_checkpointing_kwargs = {"use_reentrant": True}
            self._gradient_checkpointing_func = partial(torch.utils.checkpoint.checkpoint,
                                                        **gradient_checkpointing_kwargs)
            self.gradient_checkpointing = True

        def _update_causal_mask(self, attention_mask, dtype, cache_position, target_length, batch_size):
            """The 4-D additive mask from the 2-D padding mask, as later HF versions make it in place."""
            min_dtype = torch.finfo(dtype).min
            sequence_length = cache_position.shape[0]
            causal_mask = torch.full((sequence_length, target_length), fill_value=min_dtype, dtype=dtype)
            diagonal_attend_mask = torch.arange(target_length) > cache_position.reshape(-1, 1)
            if self.config.sliding_window is not None:
                sliding_attend_mask = torch.arange(target_length) <= (cache_position.reshape(-1, 1)
                                                                      - self.config.sliding_window)
                diagonal_attend_mask.bitwise_or_(sliding_attend_mask)
            causal_mask *= diagonal_attend_mask
            causal_mask = causal_mask[None, None, :, :].expand(batch_size, 1, -1, -1)
            causal_mask = causal_mask.clone()  # copy to contiguous memory for in-place edit
            mask_length = attention_mask.shape[-1]
            padding_mask = causal_mask[:, :, :, :mask_length] + attention_mask[:, None, None, :]
            padding_mask = padding_mask == 0
            causal_mask[:, :, :, :mask_length] = causal_mask[:, :, :, :mask_length].masked_fill(padding_mask, min_dtype)
            return causal_mask

        def forward(self, input_ids, position_ids=None, past_key_values=None, use_cache=False, attention_mask=None):
            batch_size, seq_length = input_ids.shape
            past_key_values_length = 0 if past_key_values is None else past_key_values[0][0].shape[2]
            if position_ids is None:
                position_ids = torch.arange(past_key_values_length, seq_length + past_key_values_length,
                                            dtype=torch.long, device=input_ids.device)
                position_ids = position_ids.unsqueeze(0).view(-1, seq_length)
            hidden_states = self.embed_tokens(input_ids)
            if gemma:
                normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
                hidden_states = hidden_states * normalizer
            if attention_mask is not None:
                cache_position = torch.arange(past_key_values_length, past_key_values_length + seq_length)
                attention_mask = self._update_causal_mask(attention_mask, hidden_states.dtype, cache_position,
                                                          past_key_values_length + seq_length, batch_size)
            else:
                attention_mask = make_causal_mask(batch_size, seq_length, hidden_states.dtype, hidden_states.device,
                                                  past_key_values_length, None if gemma else self.config.sliding_window)
            next_decoder_cache = ()
            for idx, decoder_layer in enumerate(self.layers):
                past_key_value = past_key_values[idx] if past_key_values is not None else None
                if self.gradient_checkpointing and self.training:
                    hidden_states, present = self._gradient_checkpointing_func(
                        decoder_layer.__call__, hidden_states, attention_mask, position_ids, past_key_value, use_cache)
                else:
                    hidden_states, present = decoder_layer(hidden_states, attention_mask, position_ids,
                                                           past_key_value, use_cache)
                if use_cache:
                    next_decoder_cache += (present,)
            hidden_states = self.norm(hidden_states)
            return hidden_states, next_decoder_cache if use_cache else None

    class ForCausalLM(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.model = Model(config)
            self.vocab_size = config.vocab_size
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            self.apply(partial(init_weights, nn, config))
            if gemma:  # tie_word_embeddings
                self.lm_head.weight = self.model.embed_tokens.weight
            if config.gradient_checkpointing:
                self.model.gradient_checkpointing_enable()

        def forward(self, input_ids, labels=None, position_ids=None, past_key_values=None, use_cache=False,
                    attention_mask=None):
            hidden_states, past_key_values = self.model(input_ids, position_ids, past_key_values, use_cache,
                                                        attention_mask)
            logits = self.lm_head(hidden_states)
            if self.config.final_logit_softcapping is not None:
                logits = logits / self.config.final_logit_softcapping
                logits = torch.tanh(logits)
                logits = logits * self.config.final_logit_softcapping
            logits = logits.to(island)
            loss = None if labels is None else causal_lm_loss(logits, labels, self.vocab_size, nn)
            return loss, logits, past_key_values

    return ForCausalLM(config)


def bloom(torch, nn, F, config: Config):
    """``BloomForCausalLM``: ALiBi instead of positions, fused ``query_key_value`` split per head, ``baddbmm`` scores,
    a boolean mask from the causal and padding masks, ``GeLUFunction`` (a custom ``autograd.Function``) in training."""
    island = torch.float32 if config.upcast else torch.get_default_dtype()

    def build_alibi_tensor(attention_mask, num_heads, dtype):
        batch_size, seq_length = attention_mask.shape
        closest_power_of_2 = 2 ** math.floor(math.log2(num_heads))
        base = torch.tensor(2 ** (-(2 ** -(math.log2(closest_power_of_2) - 3))), device=attention_mask.device,
                            dtype=torch.float32)
        powers = torch.arange(1, 1 + closest_power_of_2, device=attention_mask.device, dtype=torch.int32)
        slopes = torch.pow(base, powers)
        if closest_power_of_2 != num_heads:
            extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest_power_of_2) - 3))),
                                      device=attention_mask.device, dtype=torch.float32)
            num_remaining_heads = min(closest_power_of_2, num_heads - closest_power_of_2)
            extra_powers = torch.arange(1, 1 + 2 * num_remaining_heads, 2, device=attention_mask.device,
                                        dtype=torch.int32)
            slopes = torch.cat([slopes, torch.pow(extra_base, extra_powers)], dim=0)
        arange_tensor = ((attention_mask.cumsum(dim=-1) - 1) * attention_mask)[:, None, :]
        alibi = slopes[..., None] * arange_tensor
        return alibi.reshape(batch_size * num_heads, 1, seq_length).to(dtype)

    def bloom_gelu_forward(x):
        return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))

    def bloom_gelu_back(g, x):
        x = x[0]  # x is a tuple of 1 element, needs to unpack it first
        tanh_out = torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x))
        ff = 0.5 * x * ((1 - tanh_out * tanh_out) * (0.79788456 + 0.1070322243 * x * x)) + 0.5 * (1 + tanh_out)
        return ff * g

    class GeLUFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return bloom_gelu_forward(input)

        @staticmethod
        def backward(ctx, grad_output):
            input = ctx.saved_tensors
            tmp = bloom_gelu_back(grad_output, input)
            return tmp

    class BloomGelu(nn.Module):
        def forward(self, x):
            if self.training:
                return GeLUFunction.apply(x)
            return bloom_gelu_forward(x)

    def dropout_add(x, residual, prob, training):
        out = F.dropout(x, p=prob, training=training)
        out = residual + out
        return out

    class BloomAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.hidden_size = config.hidden_size
            self.num_heads = config.num_attention_heads
            self.head_dim = self.hidden_size // self.num_heads
            self.inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
            self.beta = 1.0
            self.query_key_value = nn.Linear(self.hidden_size, 3 * self.hidden_size, bias=True)
            self.dense = nn.Linear(self.hidden_size, self.hidden_size)

        def _split_heads(self, fused_qkv):
            batch_size, seq_length, three_times_hidden_size = fused_qkv.shape
            fused_qkv = fused_qkv.view(batch_size, seq_length, self.num_heads, 3, self.head_dim)
            return fused_qkv[..., 0, :], fused_qkv[..., 1, :], fused_qkv[..., 2, :]

        def _merge_heads(self, x):
            batch_size_and_num_heads, seq_length, _ = x.shape
            batch_size = batch_size_and_num_heads // self.num_heads
            x = x.view(batch_size, self.num_heads, seq_length, self.head_dim)
            x = x.permute(0, 2, 1, 3)
            return x.reshape(batch_size, seq_length, self.num_heads * self.head_dim)

        def forward(self, hidden_states, residual, alibi, attention_mask, layer_past=None, use_cache=False):
            fused_qkv = self.query_key_value(hidden_states)
            (query_layer, key_layer, value_layer) = self._split_heads(fused_qkv)
            batch_size, q_length, _, _ = query_layer.shape
            query_layer = query_layer.transpose(1, 2).reshape(batch_size * self.num_heads, q_length, self.head_dim)
            key_layer = key_layer.permute(0, 2, 3, 1).reshape(batch_size * self.num_heads, self.head_dim, q_length)
            value_layer = value_layer.transpose(1, 2).reshape(batch_size * self.num_heads, q_length, self.head_dim)
            if layer_past is not None:
                past_key, past_value = layer_past
                key_layer = torch.cat((past_key, key_layer), dim=2)
                value_layer = torch.cat((past_value, value_layer), dim=1)
            _, _, kv_length = key_layer.shape
            present = (key_layer, value_layer) if use_cache is True else None
            matmul_result = alibi.baddbmm(batch1=query_layer, batch2=key_layer, beta=self.beta,
                                          alpha=self.inv_norm_factor)
            attention_scores = matmul_result.view(batch_size, self.num_heads, q_length, kv_length)
            input_dtype = attention_scores.dtype
            attn_weights = torch.masked_fill(attention_scores, attention_mask, torch.finfo(attention_scores.dtype).min)
            attention_probs = F.softmax(attn_weights, dim=-1, dtype=island).to(input_dtype)
            attention_probs_reshaped = attention_probs.view(batch_size * self.num_heads, q_length, kv_length)
            context_layer = torch.bmm(attention_probs_reshaped, value_layer)
            context_layer = self._merge_heads(context_layer)
            output_tensor = self.dense(context_layer)
            output_tensor = dropout_add(output_tensor, residual, 0.0, self.training)
            return output_tensor, present

    class BloomMLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.dense_h_to_4h = nn.Linear(config.hidden_size, 4 * config.hidden_size)
            self.gelu_impl = BloomGelu()
            self.dense_4h_to_h = nn.Linear(4 * config.hidden_size, config.hidden_size)

        def forward(self, hidden_states, residual):
            hidden_states = self.gelu_impl(self.dense_h_to_4h(hidden_states))
            intermediate_output = self.dense_4h_to_h(hidden_states)
            return dropout_add(intermediate_output, residual, 0.0, self.training)

    class BloomBlock(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.self_attention = BloomAttention(config)
            self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.mlp = BloomMLP(config)

        def forward(self, hidden_states, alibi, attention_mask, layer_past=None, use_cache=False):
            layernorm_output = self.input_layernorm(hidden_states)
            residual = hidden_states
            attention_output, present = self.self_attention(layernorm_output, residual, alibi, attention_mask,
                                                            layer_past=layer_past, use_cache=use_cache)
            layernorm_output = self.post_attention_layernorm(attention_output)
            residual = attention_output
            output = self.mlp(layernorm_output, residual)
            return output, present

    def _make_causal_mask(input_ids_shape, device, past_key_values_length):
        batch_size, target_length = input_ids_shape
        mask = torch.empty((target_length, target_length + past_key_values_length), dtype=torch.bool, device=device)
        seq_ids = torch.arange(target_length, device=device)
        mask[:, past_key_values_length:] = seq_ids[:, None] < seq_ids[None, :]
        if past_key_values_length > 0:
            mask[:, :past_key_values_length] = False
        return mask[None, None, :, :].expand(batch_size, 1, target_length, target_length + past_key_values_length)

    def _expand_mask(mask, tgt_length):
        batch_size, src_length = mask.shape
        expanded_mask = ~(mask[:, None, None, :].to(torch.bool))
        return expanded_mask.expand(batch_size, 1, tgt_length, src_length)

    class BloomModel(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.num_heads = config.num_attention_heads
            self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
            self.word_embeddings_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.h = nn.ModuleList([BloomBlock(config) for _ in range(config.num_hidden_layers)])
            self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

        def _prepare_attn_mask(self, attention_mask, input_shape, past_key_values_length):
            combined_attention_mask = None
            _, src_length = input_shape
            if src_length > 1:
                combined_attention_mask = _make_causal_mask(input_shape, attention_mask.device, past_key_values_length)
            expanded_attn_mask = _expand_mask(attention_mask, tgt_length=src_length)
            return (expanded_attn_mask if combined_attention_mask is None
                    else expanded_attn_mask | combined_attention_mask)

        def forward(self, input_ids, past_key_values=None, attention_mask=None, use_cache=False):
            batch_size, seq_length = input_ids.shape
            if past_key_values is None:
                past_key_values = tuple([None] * len(self.h))
            hidden_states = self.word_embeddings_layernorm(self.word_embeddings(input_ids))
            presents = () if use_cache else None
            seq_length_with_past, past_key_values_length = seq_length, 0
            if past_key_values[0] is not None:
                past_key_values_length = past_key_values[0][0].shape[2]
                seq_length_with_past = seq_length_with_past + past_key_values_length
            if attention_mask is None:
                attention_mask = torch.ones((batch_size, seq_length_with_past), device=hidden_states.device)
            alibi = build_alibi_tensor(attention_mask, self.num_heads, dtype=hidden_states.dtype)
            causal_mask = self._prepare_attn_mask(attention_mask, (batch_size, seq_length), past_key_values_length)
            for block, layer_past in zip(self.h, past_key_values):
                hidden_states, present = block(hidden_states, alibi, causal_mask, layer_past, use_cache)
                if use_cache is True:
                    presents = presents + (present,)
            return self.ln_f(hidden_states), presents

    class BloomForCausalLM(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.transformer = BloomModel(config)
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            self.apply(partial(init_weights, nn, config))
            self.lm_head.weight = self.transformer.word_embeddings.weight

        def forward(self, input_ids, labels=None, attention_mask=None, past_key_values=None, use_cache=False):
            hidden_states, presents = self.transformer(input_ids, past_key_values, attention_mask, use_cache)
            lm_logits = self.lm_head(hidden_states)
            loss = None if labels is None else causal_lm_loss(lm_logits, labels, self.config.vocab_size, nn)
            return loss, lm_logits, presents

    return BloomForCausalLM(config)


def gpt_neox(torch, nn, F, config: Config):
    """``GPTNeoXForCausalLM``: fused ``query_key_value`` viewed per head and chunked, rotary on the first
    ``rotary_pct`` of each head, a boolean ``tril`` buffer as the causal mask, ``baddbmm`` scores, parallel residual."""
    RotaryEmbedding, apply_rotary_pos_emb, _, _ = rotary_helpers(torch, nn, config)

    class GPTNeoXAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.num_attention_heads = config.num_attention_heads
            self.hidden_size = config.hidden_size
            self.head_size = self.hidden_size // self.num_attention_heads
            self.rotary_ndims = int(self.head_size * config.rotary_pct)
            max_positions = config.max_position_embeddings
            self.register_buffer("bias", torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(
                1, 1, max_positions, max_positions), persistent=False)
            self.rotary_emb = RotaryEmbedding(self.rotary_ndims, config.max_position_embeddings, base=config.rope_theta)
            self.norm_factor = self.head_size ** -0.5
            self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)

        def forward(self, hidden_states, position_ids, layer_past=None, use_cache=False):
            input_shape = hidden_states.shape[:-1]
            qkv = self.query_key_value(hidden_states).view(*input_shape, -1, 3 * self.head_size).transpose(1, 2)
            query, key, value = qkv.chunk(3, dim=-1)
            query_rot, query_pass = query[..., : self.rotary_ndims], query[..., self.rotary_ndims:]
            key_rot, key_pass = key[..., : self.rotary_ndims], key[..., self.rotary_ndims:]
            seq_len = key.shape[-2]
            if layer_past is not None:
                seq_len += layer_past[0].shape[-2]
            cos, sin = self.rotary_emb(value, seq_len=seq_len)
            query, key = apply_rotary_pos_emb(query_rot, key_rot, cos, sin, position_ids)
            query = torch.cat((query, query_pass), dim=-1)
            key = torch.cat((key, key_pass), dim=-1)
            if layer_past is not None:
                key = torch.cat((layer_past[0], key), dim=-2)
                value = torch.cat((layer_past[1], value), dim=-2)
            present = (key, value) if use_cache else None
            attn_output = self._attn(query, key, value)
            attn_output = attn_output.transpose(1, 2).contiguous().view(*input_shape, self.hidden_size)
            return self.dense(attn_output), present

        def _attn(self, query, key, value):
            batch_size, num_attention_heads, query_length, attn_head_size = query.size()
            key_length = key.size(-2)
            causal_mask = self.bias[:, :, key_length - query_length: key_length, :key_length]
            query = query.reshape(batch_size * num_attention_heads, query_length, attn_head_size)
            key = key.reshape(batch_size * num_attention_heads, key_length, attn_head_size)
            attn_scores = torch.zeros(batch_size * num_attention_heads, query_length, key_length, dtype=query.dtype,
                                      device=key.device)
            attn_scores = torch.baddbmm(attn_scores, query, key.transpose(1, 2), beta=1.0, alpha=self.norm_factor)
            attn_scores = attn_scores.view(batch_size, num_attention_heads, query_length, key_length)
            mask_value = torch.finfo(attn_scores.dtype).min
            mask_value = torch.tensor(mask_value, dtype=attn_scores.dtype).to(attn_scores.device)
            attn_scores = torch.where(causal_mask, attn_scores, mask_value)
            attn_weights = nn.functional.softmax(attn_scores, dim=-1)
            attn_weights = attn_weights.to(value.dtype)
            return torch.matmul(attn_weights, value)

    class GPTNeoXMLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
            self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)
            self.act = nn.GELU()

        def forward(self, hidden_states):
            return self.dense_4h_to_h(self.act(self.dense_h_to_4h(hidden_states)))

    class GPTNeoXLayer(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.use_parallel_residual = config.use_parallel_residual
            self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.attention = GPTNeoXAttention(config)
            self.mlp = GPTNeoXMLP(config)

        def forward(self, hidden_states, position_ids, layer_past=None, use_cache=False):
            attn_output, present = self.attention(self.input_layernorm(hidden_states), position_ids, layer_past,
                                                  use_cache)
            if self.use_parallel_residual:
                # pseudocode: x = x + attn(ln1(x)) + mlp(ln2(x))
                mlp_output = self.mlp(self.post_attention_layernorm(hidden_states))
                hidden_states = mlp_output + attn_output + hidden_states
            else:
                attn_output = attn_output + hidden_states
                mlp_output = self.mlp(self.post_attention_layernorm(attn_output))
                hidden_states = mlp_output + attn_output
            return hidden_states, present

    class GPTNeoXForCausalLM(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.embed_in = nn.Embedding(config.vocab_size, config.hidden_size)
            self.layers = nn.ModuleList([GPTNeoXLayer(config) for _ in range(config.num_hidden_layers)])
            self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.embed_out = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            self.apply(partial(init_weights, nn, config))

        def forward(self, input_ids, labels=None, position_ids=None, past_key_values=None, use_cache=False):
            batch_size, seq_length = input_ids.shape
            past_length = 0 if past_key_values is None else past_key_values[0][0].size(-2)
            if past_key_values is None:
                past_key_values = tuple([None] * self.config.num_hidden_layers)
            if position_ids is None:
                position_ids = torch.arange(past_length, seq_length + past_length, dtype=torch.long)
                position_ids = position_ids.unsqueeze(0)
            hidden_states = self.embed_in(input_ids)
            presents = () if use_cache else None
            for layer, layer_past in zip(self.layers, past_key_values):
                hidden_states, present = layer(hidden_states, position_ids, layer_past, use_cache)
                if use_cache:
                    presents = presents + (present,)
            lm_logits = self.embed_out(self.final_layer_norm(hidden_states))
            loss = None if labels is None else causal_lm_loss(lm_logits, labels, self.config.vocab_size, nn)
            return loss, lm_logits, presents

    return GPTNeoXForCausalLM(config)


def build(config: Config):
    """``build(torch, nn, F)`` for ``run_in_lockstep``: the config's family."""
    make = {"mistral": mistral_or_gemma, "gemma": mistral_or_gemma, "bloom": bloom, "gpt_neox": gpt_neox}[config.family]
    return lambda torch, nn, F: make(torch, nn, F, config)
