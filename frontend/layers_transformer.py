"""Transformer layers with PyTorch's names, ``state_dict`` keys, weight layouts and defaults.

``MultiheadAttention``, ``TransformerEncoderLayer`` and
``TransformerDecoderLayer`` take sequence-first tensors ``(L, N, E)`` by
default, as PyTorch's, and ``(N, L, E)`` with ``batch_first=True``; they load
a PyTorch layer's ``state_dict`` as is.
``train()``/``eval()`` change what is traced: dropout is emitted only while
training with ``p > 0``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.containers import ModuleList
from kiln.frontend.functional_nn import attention_with_weights, embedding_padding_index
from kiln.frontend.layers import Linear
from kiln.frontend.module import Module, Parameter
from kiln.frontend.tensor import Tensor


class Embedding(Module):
    """``torch.nn.Embedding``: a lookup table ``weight[(num_embeddings, embedding_dim)]``, initialised N(0, 1) with the
    ``padding_idx`` row zero; that row gets no gradient. ``max_norm``, ``scale_grad_by_freq`` and ``sparse`` are
    refused when traced (see ``F.embedding``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, max_norm: float | None = None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False, _weight: Any = None,
                 _freeze: bool = False, dtype: str = "float32"):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = None if padding_idx is None else embedding_padding_index(padding_idx, num_embeddings)
        self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse = max_norm, norm_type, scale_grad_by_freq, sparse
        if _weight is None:
            _weight = init.normal((num_embeddings, embedding_dim), 1.0, dtype)
            if self.padding_idx is not None:
                _weight[self.padding_idx] = 0
        elif np.shape(_weight) != (num_embeddings, embedding_dim):
            raise ValueError(f"Embedding: _weight has shape {np.shape(_weight)}, expected {(num_embeddings, embedding_dim)}")
        self.weight = Parameter(np.array(_weight))  # a copy, in the given array's dtype
        self.weight.requires_grad = not _freeze

    @classmethod
    def from_pretrained(cls, embeddings: Any, freeze: bool = True, padding_idx: int | None = None, max_norm: float | None = None,
                        norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> "Embedding":
        """An ``Embedding`` holding a copy of the 2-D ``embeddings``, frozen by default, as PyTorch's."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D, got shape {embeddings.shape}")
        return cls(*embeddings.shape, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=embeddings, _freeze=freeze)

    def forward(self, input: Tensor) -> Tensor:
        return F.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        padding = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"


class LayerNorm(Module):
    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dtype: str = "float32"):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype)) if elementwise_affine and bias else None

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class Dropout(Module):
    """Identity in eval mode or with ``p = 0`` (nothing is traced); in training, ``F.dropout``."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return input
        return F.dropout(input, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, self.approximate)


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:
        return F.flatten(input, self.start_dim, self.end_dim)


class Unflatten(Module):
    """``torch.nn.Unflatten(dim, unflattened_size)``: dim ``dim`` becomes the dims ``unflattened_size`` (one may be -1)."""

    def __init__(self, dim: int, unflattened_size: tuple[int, ...]):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, input: Tensor) -> Tensor:
        dim = self.dim % len(input.shape)
        return input.reshape(*input.shape[:dim], *self.unflattened_size, *input.shape[dim + 1 :])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """``(N, L, E) -> (N, heads, L, E / heads)``."""
    n, length, embed = x.shape
    return x.reshape(n, length, heads, embed // heads).permute(0, 2, 1, 3)


def _merge_heads(x: Tensor) -> Tensor:
    n, heads, length, head_dim = x.shape
    return x.permute(0, 2, 1, 3).reshape(n, length, heads * head_dim)


def attention_keep_mask(key_padding_mask: Tensor | None, attn_mask: Tensor | None) -> Tensor | None:
    """PyTorch's "True = masked out" masks, as one "True = attend" mask broadcasting to ``(N, heads, L, S)``."""
    keep = None
    if key_padding_mask is not None:
        n, keys = key_padding_mask.shape
        keep = F.logical_not(key_padding_mask).reshape(n, 1, 1, keys)
    if attn_mask is not None:
        allowed = F.logical_not(attn_mask)
        keep = allowed if keep is None else F.where(keep, allowed, np.asarray(False))
    return keep


class MultiheadAttention(Module):
    """``torch.nn.MultiheadAttention``: packed ``in_proj_weight (3E, E)`` and ``out_proj``; ``(L, N, E)`` inputs and
    output, or ``(N, L, E)`` with ``batch_first=True``."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, batch_first: bool = False, dtype: str = "float32"):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.batch_first = batch_first
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.in_proj_weight = Parameter(init.xavier_uniform((3 * embed_dim, embed_dim), dtype))
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        if bias:
            self.out_proj.bias.data[...] = 0

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True, is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(output, weights)`` as PyTorch's: the attention weights (after dropout), averaged over the heads
        ``(N, L, S)`` or per head ``(N, heads, L, S)``; ``need_weights=False`` returns ``(output, None)`` and keeps
        attention one fused op (pass it when the weights are not read, as in PyTorch)."""
        if not self.batch_first:  # (L, N, E): attend within each sequence, batch first inside
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        projected = [self._project(x, index) for index, x in enumerate((query, key, value))]
        q, k, v = (_split_heads(x, self.num_heads) for x in projected)
        keep = attention_keep_mask(key_padding_mask, attn_mask)
        causal, dropout = is_causal and attn_mask is None, self.dropout if self.training else 0.0
        if not need_weights:
            return self._output(F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout, is_causal=causal)), None
        output, weights = attention_with_weights(q, k, v, keep, dropout, causal)
        return self._output(output), weights.mean(1) if average_attn_weights else weights

    def _output(self, heads: Tensor) -> Tensor:
        output = self.out_proj(_merge_heads(heads))
        return output if self.batch_first else output.transpose(0, 1)

    def _project(self, x: Tensor, index: int) -> Tensor:
        rows = slice(index * self.embed_dim, (index + 1) * self.embed_dim)
        bias = None if self.in_proj_bias is None else self.in_proj_bias[rows]
        return F.linear(x, self.in_proj_weight[rows], bias)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}" + (f", dropout={self.dropout}" if self.dropout else "") \
            + (", batch_first=True" if self.batch_first else "")


MultiHeadAttention = MultiheadAttention

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation(activation: Any) -> Any:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}")
    return ACTIVATIONS[activation]


class _FeedForward(Module):
    def _init_feedforward(self, d_model: int, dim_feedforward: int, dropout: float, activation: Any, dtype: str) -> None:
        self.linear1 = Linear(d_model, dim_feedforward, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, dtype=dtype)
        self.activation_fn = _activation(activation)

    def _feedforward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation_fn(self.linear1(x))))


class TransformerEncoderLayer(_FeedForward):
    """``torch.nn.TransformerEncoderLayer``; ``norm_first=True`` is the pre-norm block."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: Any = "relu",
                 layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False, dtype: str = "float32"):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=batch_first, dtype=dtype)
        self._init_feedforward(d_model, dim_feedforward, dropout, activation, dtype)
        self.norm_first = norm_first
        self.norm1, self.norm2 = LayerNorm(d_model, layer_norm_eps, dtype=dtype), LayerNorm(d_model, layer_norm_eps, dtype=dtype)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        attend = lambda x: self.dropout1(self.self_attn(x, x, x, src_key_padding_mask, False, src_mask, is_causal=is_causal)[0])  # noqa: E731
        feed = lambda x: self.dropout2(self._feedforward(x))  # noqa: E731
        if self.norm_first:
            src = src + attend(self.norm1(src))
            return src + feed(self.norm2(src))
        src = self.norm1(src + attend(src))
        return self.norm2(src + feed(src))


class TransformerDecoderLayer(_FeedForward):
    """``torch.nn.TransformerDecoderLayer``: self-attention, cross-attention on ``memory``, feed-forward."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: Any = "relu",
                 layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False, dtype: str = "float32"):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=batch_first, dtype=dtype)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=batch_first, dtype=dtype)
        self._init_feedforward(d_model, dim_feedforward, dropout, activation, dtype)
        self.norm_first = norm_first
        self.norm1, self.norm2, self.norm3 = (LayerNorm(d_model, layer_norm_eps, dtype=dtype) for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = Dropout(dropout), Dropout(dropout), Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None, memory_mask: Tensor | None = None,
                tgt_key_padding_mask: Tensor | None = None, memory_key_padding_mask: Tensor | None = None,
                tgt_is_causal: bool = False, memory_is_causal: bool = False) -> Tensor:
        attend = lambda x: self.dropout1(self.self_attn(x, x, x, tgt_key_padding_mask, False, tgt_mask, is_causal=tgt_is_causal)[0])  # noqa: E731
        cross = lambda x: self.dropout2(self.multihead_attn(x, memory, memory, memory_key_padding_mask, False, memory_mask, is_causal=memory_is_causal)[0])  # noqa: E731
        feed = lambda x: self.dropout3(self._feedforward(x))  # noqa: E731
        if self.norm_first:
            tgt = tgt + attend(self.norm1(tgt))
            tgt = tgt + cross(self.norm2(tgt))
            return tgt + feed(self.norm3(tgt))
        tgt = self.norm1(tgt + attend(tgt))
        tgt = self.norm2(tgt + cross(tgt))
        return self.norm3(tgt + feed(tgt))


class TransformerEncoder(Module):
    """``torch.nn.TransformerEncoder``: ``num_layers`` copies of ``encoder_layer`` (``layers.0``, ... in the
    ``state_dict``; copies, so all start from the layer's weights, as PyTorch's), then an optional ``norm``."""

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Module | None = None, **_ignored: Any):
        super().__init__()
        self.layers = ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers, self.norm = num_layers, norm

    def forward(self, src: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                is_causal: bool | None = None) -> Tensor:
        for layer in self.layers:
            src = layer(src, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(Module):
    """``torch.nn.TransformerDecoder``: ``num_layers`` copies of ``decoder_layer`` over ``memory``, then an optional ``norm``."""

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: Module | None = None):
        super().__init__()
        self.layers = ModuleList(copy.deepcopy(decoder_layer) for _ in range(num_layers))
        self.num_layers, self.norm = num_layers, norm

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None, memory_mask: Tensor | None = None,
                tgt_key_padding_mask: Tensor | None = None, memory_key_padding_mask: Tensor | None = None,
                tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> Tensor:
        for layer in self.layers:
            tgt = layer(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask, bool(tgt_is_causal), memory_is_causal)
        return tgt if self.norm is None else self.norm(tgt)
