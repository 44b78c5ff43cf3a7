"""Transformer layers with PyTorch's names, ``state_dict`` keys, weight layouts and defaults.

``MultiheadAttention``, ``TransformerEncoderLayer`` and
``TransformerDecoderLayer`` take sequence-first tensors ``(L, N, E)`` by
default, as PyTorch's, and ``(N, L, E)`` with ``batch_first=True``; they load
a PyTorch layer's ``state_dict`` as is. ``Transformer`` is PyTorch's whole
encoder-decoder built from them (its masks converted to kiln's bool form).
``train()``/``eval()`` change what is traced: dropout is emitted only while
training with ``p > 0``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType, is_float_array_dtype
from kiln.frontend import layer_resets
from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.containers import ModuleList
from kiln.frontend.attention_fast_path import encoder_layer_takes_fast_path, is_float_mask, off_fast_path, takes_fast_path
from kiln.frontend.eager_values import eager_array
from kiln.frontend.functional_attention_paths import attention_with_bias, nan_rows_attending_nothing
from kiln.frontend.functional_nn import attention_with_weights, causal_keep, embedding_padding_index
from kiln.frontend.layers import Linear
from kiln.frontend.module import Module, Parameter, _to_numpy, layer_dtype
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.torch_size import Size
from kiln.frontend.trace import located_error
from kiln.frontend.transformer_nested_padding import nested_tensor_blocker, zeroes_padded_outputs


class Embedding(Module):
    """``torch.nn.Embedding``: a lookup table ``weight[(num_embeddings, embedding_dim)]``, initialised N(0, 1) with the
    ``padding_idx`` row zero; that row gets no gradient. ``max_norm`` renormalizes the looked-up rows in place
    (eagerly; refused when traced), ``scale_grad_by_freq`` divides each row's gradient by its count in the batch, and
    ``sparse=True`` gives the dense gradient (see ``F.embedding`` and frontend/embedding_options.py)."""

    reset_parameters = layer_resets.standard_normal_rows

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, max_norm: float | None = None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False, _weight: Any = None,
                 _freeze: bool = False, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = None if padding_idx is None else embedding_padding_index(padding_idx, num_embeddings)
        self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse = max_norm, norm_type, scale_grad_by_freq, sparse
        drawn = _weight is None
        if _weight is None:
            _weight = init.normal((num_embeddings, embedding_dim), 1.0, dtype)
            if self.padding_idx is not None:
                _weight[self.padding_idx] = 0
        elif np.shape(_weight) != (num_embeddings, embedding_dim):
            raise ValueError(f"Embedding: _weight has shape {np.shape(_weight)}, expected {(num_embeddings, embedding_dim)}")
        self.weight = Parameter(np.array(_weight))  # a copy, in the given array's dtype
        self.weight.requires_grad = not _freeze
        if drawn:  # not from_pretrained's weight, as PyTorch's
            layer_resets.reset_if_overridden(self, layer_resets.standard_normal_rows)

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
    reset_parameters = layer_resets.ones_and_zeros

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype)) if elementwise_affine and bias else None
        layer_resets.reset_if_overridden(self, layer_resets.ones_and_zeros)

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class Dropout(Module):
    """Identity in eval mode or with ``p = 0`` (nothing is traced); in training, ``F.dropout``."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return input
        return F.dropout(input, self.p, training=True, inplace=self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


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


class AttentionMaskShapeError(TraceError, RuntimeError):
    """An ``attn_mask`` not ``(L, S)`` nor ``(N * num_heads, L, S)`` (torch's ``RuntimeError``)."""


class AttentionMaskAssertionError(TraceError, AssertionError):
    """A mask of the wrong rank, or a ``key_padding_mask`` not ``(N, S)``: what torch asserts (an ``AssertionError``)."""


def check_attention_masks(query: Any, key: Any, key_padding_mask: Any, attn_mask: Any, num_heads: int,
                          batch_first: bool) -> None:
    """``MultiheadAttention``'s mask checks, in torch's order and words (``F.multi_head_attention_forward``'s): each
    mask's rank, an unbatched query's per-head mask, then ``attn_mask``'s shape, then ``key_padding_mask``'s. Without
    them a wrong mask fails as a broadcast or reshape deep inside attention, naming shapes the user never made.
    Symbolic dims (a compiled call's batch) are left to the shape rules."""
    batched = np.ndim(query) == 3
    _check_mask_ranks(batched, key_padding_mask, attn_mask)
    if batched:
        sequence, across = (1, 0) if batch_first else (0, 1)
        batch, length, keys = np.shape(query)[across], np.shape(query)[sequence], np.shape(key)[sequence]
    else:
        batch, length, keys = 1, np.shape(query)[0], np.shape(key)[0]
        _check_unbatched_mask(attn_mask, (num_heads, length, keys))
    _check_attn_mask_shape(attn_mask, batch, length, keys, num_heads)
    if key_padding_mask is not None:  # an unbatched query's (S,) mask is a batch of one, as torch unsqueezes it
        _check_padding_shape(tuple(np.shape(key_padding_mask)) if batched else (1, *np.shape(key_padding_mask)), batch,
                             keys)


def _check_mask_ranks(batched: bool, key_padding_mask: Any, attn_mask: Any) -> None:
    """torch's ``_mha_shape_check`` of the masks' ranks."""
    kind = "batched (3-D)" if batched else "unbatched (2-D)"
    if key_padding_mask is not None and np.ndim(key_padding_mask) != (2 if batched else 1):
        raise located_error(f"For {kind} `query`, expected `key_padding_mask` to be `None` or {2 if batched else 1}-D but "
                            f"found {np.ndim(key_padding_mask)}-D tensor instead", kind=AttentionMaskAssertionError)
    if attn_mask is not None and np.ndim(attn_mask) not in (2, 3):
        raise located_error(f"For {kind} `query`, expected `attn_mask` to be `None`, 2-D or 3-D but found "
                            f"{np.ndim(attn_mask)}-D tensor instead", kind=AttentionMaskAssertionError)


def _check_unbatched_mask(attn_mask: Any, expected: tuple[Any, ...]) -> None:
    """An unbatched query's 3-D ``attn_mask`` is per head, ``(num_heads, L, S)``."""
    if attn_mask is not None and np.ndim(attn_mask) == 3 and not _same_shape(np.shape(attn_mask), expected):
        raise located_error(f"Expected `attn_mask` shape to be {expected} but got {_size(attn_mask)}",
                            kind=AttentionMaskAssertionError)


def _check_attn_mask_shape(attn_mask: Any, batch: Any, length: Any, keys: Any, num_heads: int) -> None:
    """A 2-D ``attn_mask`` is ``(L, S)``, a 3-D one ``(N * num_heads, L, S)``: torch's check and words."""
    if attn_mask is None:
        return
    rank = np.ndim(attn_mask)
    rows = batch * num_heads if isinstance(batch, int) else None
    expected = (length, keys) if rank == 2 else (rows, length, keys)
    if not _same_shape(np.shape(attn_mask), expected):
        shown = expected if rows is not None or rank == 2 else "(bsz*num_heads, L, S)"
        raise located_error(f"The shape of the {rank}D attn_mask is {_size(attn_mask)}, but should be {shown}.",
                            kind=AttentionMaskShapeError)


def _same_shape(shape: tuple[Any, ...], expected: tuple[Any, ...]) -> bool:
    """Whether ``shape`` is ``expected``, where a dim either side is not a known int (symbolic, or None) matching any."""
    return len(shape) == len(expected) and all(
        got == want or not (isinstance(got, int) and isinstance(want, int)) for got, want in zip(shape, expected))


def _size(mask: Any) -> Size:
    return Size(np.shape(mask))


def check_key_padding_mask(key_padding_mask: Any, batch: Any, keys: Any) -> None:
    """PyTorch's check that ``key_padding_mask`` is ``(N, S)``, in its words (an ``AssertionError``), then kiln's: a
    sequence-first ``(S, N)`` one (``src == PAD_IDX`` without ``.transpose(0, 1)``) is refused here, saying what to do,
    not by a broadcast error deep inside attention. Symbolic dims are left to the shape rules."""
    if key_padding_mask is not None:
        _check_padding_shape(tuple(np.shape(key_padding_mask)), batch, keys)


def _check_padding_shape(shape: tuple[Any, ...], batch: Any, keys: Any) -> None:
    if _same_shape(shape, (batch, keys)):
        return
    axis = 0 if len(shape) < 1 or not _same_shape(shape[:1], (batch,)) else 1
    got = shape[axis] if len(shape) > axis else None
    hint = "; a sequence-first (S, N) mask needs .transpose(0, 1)" if _same_shape(shape, (keys, batch)) else ""
    raise located_error(f"Expected key_padded_mask.shape[{axis}] to be {(batch, keys)[axis]}, but got {got}: "
                        f"key_padding_mask must be (N, S) = ({batch}, {keys}) (batch, keys), got shape {shape}{hint}",
                        kind=AttentionMaskAssertionError)


def attention_keep_mask(key_padding_mask: Any, attn_mask: Any, num_heads: int = 1) -> Tensor | None:
    """PyTorch's "True = masked out" masks (bool, or float with -inf to block; tensors or arrays), as one "True =
    attend" mask broadcasting to ``(N, heads, L, S)``. A 3-D ``attn_mask`` is PyTorch's per-head ``(N * heads, L, S)``."""
    key_padding_mask = boolean_attention_mask("key_padding_mask", key_padding_mask)
    attn_mask = boolean_attention_mask("attn_mask", attn_mask)
    if attn_mask is not None and attn_mask.ndim == 3:
        attn_mask = attn_mask.reshape((-1, num_heads) + tuple(attn_mask.shape[1:]))
    keep = None
    if key_padding_mask is not None:
        n, keys = key_padding_mask.shape
        keep = F.logical_not(key_padding_mask).reshape(n, 1, 1, keys)
    if attn_mask is not None:
        allowed = F.logical_not(attn_mask)
        keep = allowed if keep is None else F.where(keep, allowed, np.asarray(False))
    return keep


def additive_attention_bias(key_padding_mask: Any, attn_mask: Any, num_heads: int, dtype: DType) -> Tensor | None:
    """The masks as the one float bias torch adds to the scores, ``(N or 1, heads or 1, L or 1, S)``, when a float one
    may hold values other than 0 and -inf (an ALiBi or relative-position bias, or a traced mask of unknown values); a
    bool one gives -inf where it masks. None otherwise: the bool keep mask serves (one fused attention op)."""
    if not any(_adds_values(mask) for mask in (key_padding_mask, attn_mask)):
        return None
    bias = None
    if key_padding_mask is not None:
        padding = _as_bias(key_padding_mask, dtype)
        bias = padding.reshape(padding.shape[0], 1, 1, padding.shape[1])
    if attn_mask is not None:
        added = _as_bias(attn_mask, dtype)
        added = added.reshape((-1, num_heads) + tuple(added.shape[1:])) if added.ndim == 3 else added
        bias = added if bias is None else bias + added
    return bias


def _adds_values(mask: Any) -> bool:
    """A float mask that may hold values other than 0 and -inf: known to, or of values unknown in a trace (a mask
    given to a compiled function: adding it is right whatever it holds)."""
    return is_float_mask(mask) and _other_values(mask) is not False


def _other_values(mask: Any) -> bool | None:
    """Whether a float mask holds values other than 0 and -inf; None where a trace does not know its values."""
    array = _known_values(mask) if isinstance(mask, Tensor) else np.asarray(_to_numpy(mask))
    if array is None:
        return None
    array = array.astype(np.float32)
    return bool(np.any((array != 0) & ~np.isneginf(array)))


def _known_values(tensor: Tensor) -> np.ndarray | None:
    """An eager tensor's values, or a traced one's computed from constants only (``nn.Transformer``'s causal mask)."""
    from kiln.frontend.trace_known_values import known_value

    array = eager_array(tensor)
    return array if array is not None else known_value(tensor)


def _as_bias(mask: Any, dtype: DType) -> Tensor:
    """A mask as scores to add: a float one as it is, a bool one -inf where True (masked out), 0 elsewhere."""
    tensor = mask if isinstance(mask, Tensor) else apply("tensor.constant", value=np.asarray(_to_numpy(mask)))
    if tensor.dtype is DType.bool:
        return tensor.to(dtype).masked_fill(tensor, float("-inf"))
    return tensor.to(dtype)


class MultiheadAttention(Module):
    """``torch.nn.MultiheadAttention``, with its arguments in its order: packed ``in_proj_weight (3E, E)`` and
    ``out_proj``; ``(L, N, E)`` inputs and output, or ``(N, L, E)`` with ``batch_first=True``. Keys and values of other
    widths (``kdim``, ``vdim``: cross-attention to another model's states) get separate ``q/k/v_proj_weight``;
    ``add_bias_kv`` appends learned ``bias_k``/``bias_v`` to the keys and values, ``add_zero_attn`` a zero key and value;
    those run PyTorch's general path (``F.multi_head_attention_forward``), the rest one fused attention op."""

    _reset_parameters = layer_resets.attention_xavier

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, add_bias_kv: bool = False,
                 add_zero_attn: bool = False, kdim: int | None = None, vdim: int | None = None, batch_first: bool = False,
                 device: Any = None, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.batch_first = batch_first
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.kdim, self.vdim = kdim if kdim is not None else embed_dim, vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(init.xavier_uniform((3 * embed_dim, embed_dim), dtype))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight, self.k_proj_weight, self.v_proj_weight = (
                Parameter(init.xavier_uniform((embed_dim, width), dtype)) for width in (embed_dim, self.kdim, self.vdim))
            self.register_parameter("in_proj_weight", None)
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        if bias:
            self.out_proj.bias.data[...] = 0
        self.bias_k = self.bias_v = None
        if add_bias_kv:
            self.bias_k, self.bias_v = Parameter(np.zeros((1, 1, embed_dim), dtype)), Parameter(np.zeros((1, 1, embed_dim), dtype))
            init.xavier_normal_(self.bias_k), init.xavier_normal_(self.bias_v)
        self.add_zero_attn = add_zero_attn

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True, is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(output, weights)`` as PyTorch's: the attention weights (after dropout), averaged over the heads
        ``(N, L, S)`` or per head ``(N, heads, L, S)``; ``need_weights=False`` returns ``(output, None)`` and keeps
        attention one fused op (pass it when the weights are not read, as in PyTorch)."""
        check_attention_masks(query, key, key_padding_mask, attn_mask, self.num_heads, self.batch_first)
        if query.dim() == 2:
            return self._unbatched(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)
        if not self._qkv_same_embed_dim or self.bias_k is not None or self.add_zero_attn:
            return self._general(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)
        fast = takes_fast_path(self, query, key, value, attn_mask, key_padding_mask)
        if not self.batch_first:  # (L, N, E): attend within each sequence, batch first inside
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        projected = [self._project(x, index) for index, x in enumerate((query, key, value))]
        q, k, v = (_split_heads(x, self.num_heads) for x in projected)
        causal, dropout = is_causal and attn_mask is None, self.dropout if self.training else 0.0
        bias = additive_attention_bias(key_padding_mask, attn_mask, self.num_heads, q.dtype)
        if bias is not None:  # a float mask of other values than 0 and -inf: added to the scores, as torch's
            output, weights = attention_with_bias(q, k, v, bias, dropout, causal, need_weights)
            return self._output(output), None if weights is None else weights.mean(1) if average_attn_weights else weights
        keep = attention_keep_mask(key_padding_mask, attn_mask, self.num_heads)
        if not need_weights:
            output = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout, is_causal=causal)
            output = nan_rows_attending_nothing(output, None, keep, causal, k.shape[-2])[0] if fast else output
            return self._output(output), None
        output, weights = attention_with_weights(q, k, v, keep, dropout, causal)
        output, weights = nan_rows_attending_nothing(output, weights, keep, causal, k.shape[-2])
        return self._output(output), weights.mean(1) if average_attn_weights else weights

    def _unbatched(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Any, need_weights: bool, attn_mask: Any,
                   average_attn_weights: bool, is_causal: bool) -> tuple[Tensor, Tensor | None]:
        """PyTorch's unbatched ``(L, E)`` query with ``(S, E)`` keys and values, whatever ``batch_first``: a batch of
        one (the key padding mask ``(S,)`` its row; a 3-D ``attn_mask`` is ``(heads, L, S)``), the output ``(L, E)``
        and the weights ``(L, S)`` or ``(heads, L, S)``."""
        axis = 0 if self.batch_first else 1
        mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        output, weights = self.forward(query.unsqueeze(axis), key.unsqueeze(axis), value.unsqueeze(axis), mask, need_weights,
                                       attn_mask, average_attn_weights, is_causal)
        return output.squeeze(axis), None if weights is None else weights.squeeze(0)

    def _general(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Any, need_weights: bool, attn_mask: Any,
                 average_attn_weights: bool, is_causal: bool) -> tuple[Tensor, Tensor | None]:
        """PyTorch's ``multi_head_attention_forward`` on this module's weights (separate projections, appended keys)."""
        from kiln.frontend.functional_more import multi_head_attention_forward

        if self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        separate = not self._qkv_same_embed_dim
        output, weights = multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias, self.bias_k, self.bias_v,
            self.add_zero_attn, self.dropout, self.out_proj.weight, self.out_proj.bias, self.training, key_padding_mask,
            need_weights, attn_mask, use_separate_proj_weight=separate, q_proj_weight=self.q_proj_weight,
            k_proj_weight=self.k_proj_weight, v_proj_weight=self.v_proj_weight, average_attn_weights=average_attn_weights,
            is_causal=is_causal)
        return (output.transpose(0, 1) if self.batch_first else output), weights

    def _output(self, heads: Tensor) -> Tensor:
        output = self.out_proj(_merge_heads(heads))
        return output if self.batch_first else output.transpose(0, 1)

    def _project(self, x: Tensor, index: int) -> Tensor:
        rows = slice(index * self.embed_dim, (index + 1) * self.embed_dim)
        bias = None if self.in_proj_bias is None else self.in_proj_bias[rows]
        return F.linear(x, self.in_proj_weight[rows], bias)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}" + (f", dropout={self.dropout}" if self.dropout else "") \
            + (", batch_first=True" if self.batch_first else "") \
            + ("" if self._qkv_same_embed_dim else f", kdim={self.kdim}, vdim={self.vdim}")


MultiHeadAttention = MultiheadAttention

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation(activation: Any) -> Any:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}")
    return ACTIVATIONS[activation]


class _FeedForward(Module):
    def _init_feedforward(self, d_model: int, dim_feedforward: int, dropout: float, activation: Any, bias: bool, dtype: str) -> None:
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.activation_fn = _activation(activation)

    def _feedforward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation_fn(self.linear1(x))))


class TransformerEncoderLayer(_FeedForward):
    """``torch.nn.TransformerEncoderLayer``; ``norm_first=True`` is the pre-norm block; ``bias=False`` drops every
    bias (attention, feed-forward, layer norms), as PyTorch's."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: Any = "relu",
                 layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False, bias: bool = True, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, dtype=dtype)
        self._init_feedforward(d_model, dim_feedforward, dropout, activation, bias, dtype)
        self.norm_first = norm_first
        self.norm1, self.norm2 = (LayerNorm(d_model, layer_norm_eps, bias=bias, dtype=dtype) for _ in range(2))
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)

    def forward(self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """PyTorch's outputs, NaN for a sequence all padding where its fused kernel runs (``frontend/attention_fast_path.py``)."""
        if not encoder_layer_takes_fast_path(self, src):  # torch hands its attention float masks, off its fast path too
            with off_fast_path():
                return self._layer(src, src_mask, src_key_padding_mask, is_causal)
        return self._layer(src, src_mask, src_key_padding_mask, is_causal)

    def _layer(self, src: Tensor, src_mask: Tensor | None, src_key_padding_mask: Tensor | None, is_causal: bool) -> Tensor:
        attend = lambda x: self.dropout1(self.self_attn(x, x, x, src_key_padding_mask, False, src_mask, is_causal=is_causal)[0])  # noqa: E731
        feed = lambda x: self.dropout2(self._feedforward(x))  # noqa: E731
        if self.norm_first:
            src = src + attend(self.norm1(src))
            return src + feed(self.norm2(src))
        src = self.norm1(src + attend(src))
        return self.norm2(src + feed(src))


class TransformerDecoderLayer(_FeedForward):
    """``torch.nn.TransformerDecoderLayer``: self-attention, cross-attention on ``memory``, feed-forward; ``bias`` as
    the encoder layer's."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: Any = "relu",
                 layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False, bias: bool = True, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, dtype=dtype)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, dtype=dtype)
        self._init_feedforward(d_model, dim_feedforward, dropout, activation, bias, dtype)
        self.norm_first = norm_first
        self.norm1, self.norm2, self.norm3 = (LayerNorm(d_model, layer_norm_eps, bias=bias, dtype=dtype) for _ in range(3))
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

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True, **_ignored: Any):
        super().__init__()
        self.layers = ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers, self.norm = num_layers, norm
        self.enable_nested_tensor, self.mask_check = enable_nested_tensor, mask_check
        self.use_nested_tensor = enable_nested_tensor and not nested_tensor_blocker(encoder_layer)

    def forward(self, src: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                is_causal: bool | None = None) -> Tensor:
        """PyTorch's outputs, zeros at padded positions included (``frontend/transformer_nested_padding.py``)."""
        padding = boolean_attention_mask("src_key_padding_mask", src_key_padding_mask)
        zero_padding = zeroes_padded_outputs(self, src, mask, padding)
        for layer in self.layers:
            src = layer(src, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        if zero_padding:
            src = src.masked_fill(padding.unsqueeze(-1), 0.0)
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


class Transformer(Module):
    """``torch.nn.Transformer``: an encoder over ``src`` and a decoder over ``tgt`` that attends to the encoder's
    output, each ``num_*_layers`` layers and a final ``LayerNorm`` (``encoder.layers.0...``, ``encoder.norm``,
    ``decoder.layers.0...``, ``decoder.norm`` in the ``state_dict``, as PyTorch's). Every weight matrix starts
    Xavier-uniform, as PyTorch's ``_reset_parameters``. ``(S, N, E)`` inputs, or ``(N, S, E)`` with ``batch_first``, or
    unbatched ``(S, E)`` ones.

    Masks are PyTorch's: bool with True = masked out, or float as ``generate_square_subsequent_mask`` makes them, 0
    to attend and -inf to block. kiln's attention only blocks, so a float mask given as an array must hold nothing
    else (others are refused); a float mask that is a traced input blocks where it is -inf, its other values ignored.
    """

    _reset_parameters = layer_resets.matrices_xavier

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, activation: Any = "relu", custom_encoder: Module | None = None,
                 custom_decoder: Module | None = None, layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False,
                 bias: bool = True, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        layer_options = dict(dim_feedforward=dim_feedforward, dropout=dropout, activation=activation, layer_norm_eps=layer_norm_eps,
                             batch_first=batch_first, norm_first=norm_first, bias=bias, dtype=dtype)
        self.encoder = custom_encoder if custom_encoder is not None else TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, **layer_options), num_encoder_layers, LayerNorm(d_model, layer_norm_eps, bias=bias, dtype=dtype))
        self.decoder = custom_decoder if custom_decoder is not None else TransformerDecoder(
            TransformerDecoderLayer(d_model, nhead, **layer_options), num_decoder_layers, LayerNorm(d_model, layer_norm_eps, bias=bias, dtype=dtype))
        self._reset_parameters()
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Any = None, tgt_mask: Any = None, memory_mask: Any = None,
                src_key_padding_mask: Any = None, tgt_key_padding_mask: Any = None, memory_key_padding_mask: Any = None,
                src_is_causal: bool | None = None, tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> Tensor:
        """``(T, N, E)`` (``(N, T, E)`` with ``batch_first``): the decoder's output for ``tgt`` given ``src``.
        ``*_mask`` are ``(T or S, S or T)``, ``*_key_padding_mask`` ``(N, S or T)``; see the class docstring."""
        self._check_inputs(src, tgt)
        masks = _boolean_masks(src_mask=src_mask, tgt_mask=tgt_mask, memory_mask=memory_mask, src_key_padding_mask=src_key_padding_mask,
                               tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask)
        memory = self.encoder(src, mask=masks["src_mask"], src_key_padding_mask=masks["src_key_padding_mask"], is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=masks["tgt_mask"], memory_mask=masks["memory_mask"],
                            tgt_key_padding_mask=masks["tgt_key_padding_mask"], memory_key_padding_mask=masks["memory_key_padding_mask"],
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, device: Any = None, dtype: Any = None) -> Tensor:
        """``(sz, sz)``, -inf above the diagonal and 0 elsewhere (float32 unless ``dtype``), as PyTorch's: position
        ``i`` attends to positions ``0..i``. A tensor, as PyTorch's (``mask.size(0)``, ``mask.to(device)``): eager
        outside a trace, a constant in one; ``device`` is ignored. Of a symbolic ``sz`` (``x.size(1)`` in an export
        with a dynamic sequence), traced from ranges: one graph for every length."""
        from kiln.frontend.torch_functions import tensor  # lazily: the torch surface builds on the layers

        if isinstance(sz, str):
            zero = apply("tensor.constant", value=np.zeros((), layer_dtype(dtype)))
            return F.where(causal_keep(sz, sz), zero, -np.inf)
        return tensor(np.triu(np.full((sz, sz), -np.inf, layer_dtype(dtype)), 1))

    def _check_inputs(self, src: Tensor, tgt: Tensor) -> None:
        if src.ndim not in (2, 3) or tgt.ndim != src.ndim:
            layout = "(N, S, E)" if self.batch_first else "(S, N, E)"
            raise located_error(f"Transformer expects batched {layout} or unbatched (S, E) src and tgt, got {src.type} and {tgt.type}")
        batch = 0 if self.batch_first else 1
        if src.ndim == 3 and src.shape[batch] != tgt.shape[batch]:
            raise located_error(f"Transformer: the batch sizes of src {src.type} and tgt {tgt.type} (dim {batch}) must be equal")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise located_error(f"Transformer: the features of src {src.type} and tgt {tgt.type} must equal d_model={self.d_model}")

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, nhead={self.nhead}" + (", batch_first=True" if self.batch_first else "")


def _boolean_masks(**masks: Any) -> dict[str, Tensor | None]:
    return {name: boolean_attention_mask(name, mask) for name, mask in masks.items()}


def boolean_attention_mask(name: str, mask: Any) -> Tensor | None:
    """A PyTorch attention or key-padding mask as kiln's attention takes it: bool, True = masked out.

    A bool mask is kept; a float one (PyTorch adds it to the scores) blocks where it is -inf. Given as an array,
    a float mask must hold only 0 and -inf, since kiln's attention cannot add other values; a traced float mask
    cannot be checked, so it blocks where it is -inf and its other values are ignored."""
    if mask is None:
        return None
    if isinstance(mask, Tensor):
        if mask.dtype is DType.bool:
            return mask
        if not mask.dtype.is_float:
            raise located_error(f"attention: {name} must be a bool or float mask, got {mask.type}")
        if _other_values(mask):  # MultiheadAttention adds it (additive_attention_bias); a mask read as blocking cannot
            raise located_error(f"attention: the float {name} holds values other than 0 and -inf; PyTorch adds them to the "
                                f"attention scores, which kiln does in MultiheadAttention and the transformer layers but not "
                                f"here (nn.Transformer's masks, an encoder's padding); pass a bool mask (True = masked out)")
        return mask.eq(-np.inf)
    array = np.asarray(_to_numpy(mask))
    if is_float_array_dtype(array.dtype):  # bfloat16's NumPy kind is "V", not "f"
        array = array.astype(np.float32)
        if np.any((array != 0) & ~np.isneginf(array)):
            raise located_error(f"attention: the float {name} holds values other than 0 and -inf; PyTorch adds them to the "
                                f"attention scores, but kiln's attention masks only block. Pass a bool mask (True = masked out)")
        array = np.isneginf(array)
    if array.dtype != bool:
        raise located_error(f"attention: {name} must be a bool or float mask, got an array of {array.dtype}")
    return apply("tensor.constant", value=array)
