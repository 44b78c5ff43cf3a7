"""``torch.nn.MultiheadAttention``'s inference fast path, as its output shows it.

In eval mode without gradients, a batch-first self-attention (``query is key is value``, the one tensor, as a
``TransformerEncoderLayer`` passes it) runs ``torch._native_multi_head_attention``, whose softmax gives NaN for a
query every key of which is masked (a sequence all padding in ``key_padding_mask``), where the general path with
``need_weights=False`` (``F.scaled_dot_product_attention``) gives 0. The other positions are the same either way.
kiln runs the general path and, under torch 2.13's conditions (``MultiheadAttention.forward``'s
``why_not_fast_path``), makes those rows NaN (``nan_rows_attending_nothing``).

``TransformerEncoderLayer`` has its own fused kernel, under its own conditions (``encoder_layer_takes_fast_path``:
its ``why_not_sparsity_fast_path``), with the same NaN rows. Off it, torch's layer hands its attention float masks
(``F._canonical_mask``), which keep the attention off its fast path: no NaN there; kiln's layer says so directly
(``off_fast_path``)."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from kiln.frontend.autocast import region_enabled
from kiln.frontend.grad_mode import is_grad_enabled
from kiln.frontend.transformer_nested_padding import is_relu_or_gelu


_OFF = contextvars.ContextVar("attention_off_fast_path", default=False)


@contextmanager
def off_fast_path() -> Iterator[None]:
    """Attention called inside is off torch's fast path: a ``TransformerEncoderLayer`` off its own fused kernel, whose
    masks torch turns to float ones (which keep ``MultiheadAttention`` off its fast path) before calling it."""
    token = _OFF.set(True)
    try:
        yield
    finally:
        _OFF.reset(token)


def takes_fast_path(attention: Any, query: Any, key: Any, value: Any, *masks: Any) -> bool:
    """Whether torch's ``MultiheadAttention`` would run its fused inference kernel for this call (``masks``: the
    ``attn_mask`` and ``key_padding_mask`` given; a float one keeps it off)."""
    blocked = [_OFF.get(), any(is_float_mask(mask) for mask in masks), query.dim() != 3, query is not key or key is not value, attention.in_proj_weight is None,
               attention.in_proj_bias is None, attention.training, attention.num_heads % 2 != 0, not attention.batch_first,
               attention.bias_k is not None, attention.add_zero_attn, not attention._qkv_same_embed_dim,
               region_enabled("cuda")]  # torch.is_autocast_enabled() asks about CUDA's
    if any(blocked) or query.dtype is not attention.in_proj_weight.dtype:
        return False
    tensors = [query, attention.in_proj_weight, attention.in_proj_bias, attention.out_proj.weight, attention.out_proj.bias]
    return not _needs_grad(tensors)


def encoder_layer_takes_fast_path(layer: Any, src: Any) -> bool:
    """Whether torch's ``TransformerEncoderLayer`` would run its fused inference kernel for this call."""
    attention = layer.self_attn
    blocked = [src.dim() != 3, layer.training, not attention.batch_first, attention.in_proj_bias is None,
               not attention._qkv_same_embed_dim, not is_relu_or_gelu(layer), layer.norm1.eps != layer.norm2.eps,
               attention.num_heads % 2 == 1, region_enabled("cuda"),
               any(len(getattr(m, "_forward_hooks", {})) + len(getattr(m, "_forward_pre_hooks", {})) for m in layer.modules())]
    if any(blocked):
        return False
    modules = (attention.out_proj, layer.norm1, layer.norm2, layer.linear1, layer.linear2)
    return not _needs_grad([src, attention.in_proj_weight, attention.in_proj_bias, *(p for m in modules for p in m.parameters())])


def is_float_mask(mask: Any) -> bool:
    """A float attention mask (a tensor or an array), which torch adds to the scores."""
    dtype = getattr(mask, "dtype", None)
    if mask is None or dtype is None:
        return False
    return dtype.is_float if hasattr(dtype, "is_float") else np.issubdtype(np.dtype(dtype), np.floating)


def _needs_grad(tensors: list[Any]) -> bool:
    return is_grad_enabled() and any(getattr(x, "requires_grad", False) for x in tensors if x is not None)


__all__ = ["encoder_layer_takes_fast_path", "is_float_mask", "off_fast_path", "takes_fast_path"]
