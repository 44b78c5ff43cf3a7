"""``F.*`` for CNNs and transformers, with PyTorch's names, argument orders and defaults.

Re-exported by ``frontend/functional.py``: ``F.gelu``, ``F.layer_norm``,
``F.embedding``, ``F.scaled_dot_product_attention``, ``F.conv2d``,
``F.max_pool2d``, ``F.cat``, ``F.pad``... Indexing (``x[:, 1:5:2]``) lowers
to ``tensor.slice``, ``tensor.squeeze`` and ``tensor.expand_dims``.

This file holds the elementwise functions, normalization, embedding,
attention, ``conv2d``, dropout and batch norm; it re-exports the families
kept in their own files: pooling (``functional_pool2d.py``), movement
(``functional_movement.py``) and indexing (``functional_indexing.py``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType
from kiln.compiler.ops.transformer import MASKED_SCORE
from kiln.frontend.sync_batch_norm import record_running_statistics, sync_batch_norm
from kiln.frontend.layer_norm_shape_checks import check_layer_norm_shapes
from kiln.frontend.norm_size_checks import verify_batch_size
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.symbolic_dims import symbolic_arange
from kiln.frontend.tensor_inplace import honors_inplace
from kiln.frontend.autocast import autocasts
from kiln.frontend.conv_channel_checks import check_conv_channels, check_conv_rank
from kiln.frontend.functional_half import bias_added_in_opmath, mixed_norm
from kiln.frontend.functional_attention_paths import attention_in_float32, attention_with_float_mask, shared_key_value_heads, takes_float32_path
from kiln.frontend.functional_attention_paths import zero_rows_attending_nothing
from kiln.frontend.sparse_embedding import record_sparse_lookup
from kiln.frontend.embedding_options import frequency_scaled, renormalize_rows
from kiln.frontend.index_range_checks import check_rows_in_range, checked_at_run_time
from kiln.frontend.functional_movement import cat, chunk, concat, flatten, narrow, pad, split, squeeze, stack, unsqueeze
from kiln.frontend.functional_indexing import getitem
from kiln.frontend.functional_indexing import _gathered_rows  # noqa: F401  (re-exported: advanced_indexing imports it from here)
from kiln.frontend.functional_pool2d import avg_pool2d, max_pool2d
from kiln.frontend.functional_pool2d import (  # noqa: F401  (re-exported: the 1-D and 3-D pools import them from here)
    _gathered_max, _pool_axis, avg_pool_nchw, batched_pool_input, like_pool_input, max_pool_nchw, window_max,
)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


# Elementwise ----------------------------------------------------------------


def abs(input: Tensor) -> Tensor:  # noqa: A001  (PyTorch's name)
    return apply("tensor.abs", input)


def erf(input: Tensor) -> Tensor:
    return apply("tensor.erf", input)


def rsqrt(input: Tensor) -> Tensor:
    return apply("tensor.rsqrt", input)


def clamp(input: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    return input.clamp(min, max)


clip = clamp


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    return apply("nn.gelu", input, approximate=approximate)


def argmax(input: Tensor, dim: int = -1, keepdim: bool = False) -> Tensor:
    return apply("tensor.argmax", input, axis=dim, keepdims=keepdim)


def amin(input: Tensor, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> Tensor:
    return apply("tensor.reduce_min", input, axes=dim, keepdims=keepdim)


def one_hot(tensor: Tensor, num_classes: int = -1, dtype: Any = "int64") -> Tensor:
    """PyTorch gives int64; pass ``dtype="float32"`` to multiply with logits. ``num_classes=-1`` (PyTorch's default)
    is the largest class plus one: eagerly read off the values; a trace needs it given."""
    if num_classes == -1:
        num_classes = _classes_seen(tensor)
    tensor = _check_classes(tensor, num_classes)
    return apply("tensor.one_hot", tensor, num_classes=num_classes, dtype=DType.of(dtype))


def _check_classes(tensor: Any, num_classes: int) -> Any:
    """PyTorch's RuntimeError for an eager class value outside ``[0, num_classes)`` (its row would be all zeros); a
    traced tensor is checked when the graph runs. Returns the tensor to use."""
    from kiln.frontend.eager_values import eager_array

    values = eager_array(tensor) if isinstance(tensor, Tensor) else np.asarray(tensor)
    if values is None:
        return checked_at_run_time(tensor, num_classes, "Class values must be non-negative and smaller than "
                                   f"num_classes. (one_hot got {{value}} for num_classes={num_classes})")
    if values.size == 0:
        return tensor
    if values.min() < 0:
        raise located_error(f"Class values must be non-negative. (one_hot got {values.min()})")
    if values.max() >= num_classes:
        raise located_error(f"Class values must be smaller than num_classes. (one_hot got {values.max()} for "
                            f"num_classes={num_classes})")
    return tensor


def _classes_seen(tensor: Any) -> int:
    """The largest value of an eager ``tensor`` plus one (PyTorch's inferred ``num_classes``)."""
    from kiln.frontend.eager_values import eager_array

    values = eager_array(tensor) if isinstance(tensor, Tensor) else np.asarray(tensor)
    if values is None:
        raise located_error("one_hot: num_classes=-1 infers the class count from the values, which a trace does not have "
                            "(a data-dependent shape); pass num_classes")
    if values.size == 0:
        raise located_error("one_hot: Can not infer total number of classes from empty tensor; pass num_classes")
    return int(values.max()) + 1


def triu(input: Tensor, diagonal: int = 0) -> Tensor:
    return apply("tensor.triu", input, k=diagonal)


def tril(input: Tensor, diagonal: int = 0) -> Tensor:
    return apply("tensor.tril", input, k=diagonal)


# Normalization, embedding, attention ------------------------------------------


def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize over the trailing ``normalized_shape`` dims; a missing weight is ones, a missing bias zeros. A half
    input with float32 weights computes in float32 and keeps the input's dtype (``mixed_norm``)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    check_layer_norm_shapes(input, shape, weight, bias)
    if mixed_dtypes(input, weight, bias):
        return mixed_norm(lambda x, w, b: layer_norm(x, normalized_shape, w, b, eps), input, weight, bias)
    weight = weight if weight is not None else _filled(1.0, shape, input)
    bias = bias if bias is not None else _filled(0.0, shape, input)
    return apply("nn.layer_norm", input, weight, bias, eps=eps)


def mixed_dtypes(input: Tensor, *parameters: Tensor | None) -> bool:
    """A half ``input`` beside a parameter of another dtype (``mixed_norm`` decides what to do with it)."""
    dtype = getattr(input, "dtype", None)
    return isinstance(dtype, DType) and dtype.is_half and any(p is not None and getattr(p, "dtype", dtype) is not dtype for p in parameters)


def _filled(value: float, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A constant of ``like``'s dtype (a tensor's, or an array's fed to an eager layer: ``BatchNorm2d(affine=False)(x)``)."""
    return apply("tensor.constant", value=np.full(shape, value, dtype=DType.of(like.dtype).numpy))


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None, max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight`` picked by integer ``input``: ``(..., ) -> (..., embedding_dim)``. The ``padding_idx`` row
    gets no gradient, as in PyTorch: positions holding it read the row through ``stop_gradient``. ``sparse=True``
    gives the weight a sparse COO ``.grad`` eagerly, as PyTorch's (``frontend/sparse_embedding.py``)."""
    input = check_rows_in_range("embedding", input, weight.shape[0])
    if max_norm is not None:
        renormalize_rows(input, weight, max_norm, norm_type, "embedding")
    rows = apply("tensor.take", weight, input, axis=0)
    if sparse:
        record_sparse_lookup(rows, weight, input, padding_idx, scale_grad_by_freq, "embedding")
    if scale_grad_by_freq:
        rows = frequency_scaled(rows, input if isinstance(input, Tensor) else apply("tensor.constant", value=np.asarray(input)),
                                weight.shape[0])
    if padding_idx is None:
        return rows
    padding_idx = embedding_padding_index(padding_idx, weight.shape[0])
    keep = input.ne(padding_idx).unsqueeze(-1)
    return apply("tensor.where", keep, rows, rows.detach())


def embedding_padding_index(padding_idx: int, num_embeddings: int) -> int:
    """``padding_idx`` in ``[0, num_embeddings)``; negative counts from the end, as PyTorch's."""
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise TraceError(f"embedding: padding_idx {padding_idx} must be within num_embeddings {num_embeddings}")
    return padding_idx % num_embeddings


@autocasts("scaled_dot_product_attention")
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Tensor:
    """``softmax(q k^T * scale) v``; a bool ``attn_mask`` is True where a query may attend (a query that may attend
    nothing gets 0), a float one is added to the scores, as PyTorch. ``dropout_p`` drops attention weights (always, as
    PyTorch's: a module passes 0 in eval mode); ``enable_gqa`` shares each key/value head among a group of query heads.
    Half inputs compute as torch's CPU kernel (``frontend/functional_attention_paths.py``)."""
    if not 0 <= dropout_p < 1:
        raise TraceError(f"scaled_dot_product_attention: dropout_p must be in [0, 1), got {dropout_p}")
    if enable_gqa:
        key, value = shared_key_value_heads(query, key, value)
    keep = attn_mask
    if is_causal and attn_mask is None and _symbolic_lengths(query, key):  # an export with a dynamic sequence
        keep, is_causal = causal_keep(query.shape[-2], key.shape[-2]), False
    output = _attention(query, key, value, keep, dropout_p, is_causal, scale)
    return zero_rows_attending_nothing(output, attn_mask)


def _symbolic_lengths(query: Tensor, key: Tensor) -> bool:
    return isinstance(query.shape[-2], str) or isinstance(key.shape[-2], str)


def causal_keep(queries: Any, keys: Any) -> Tensor:
    """torch's ``is_causal`` mask, ``ones(L, S).tril()``: query ``i`` may attend key ``j <= i``; from two ranges where a
    length is symbolic (one graph for every sequence length, as an ONNX export with a dynamic axis needs)."""
    if isinstance(queries, int) and isinstance(keys, int):
        return apply("tensor.constant", value=np.tril(np.ones((queries, keys), bool)))
    rows, columns = (_positions(n) for n in (queries, keys))
    return columns.unsqueeze(0) <= rows.unsqueeze(-1)


def _positions(length: Any) -> Tensor:
    return symbolic_arange(0, length, 1, DType.i64) if isinstance(length, str) else apply(
        "tensor.constant", value=np.arange(length, dtype=np.int64))


def _attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None, dropout_p: float, is_causal: bool,
               scale: float | None) -> Tensor:
    if takes_float32_path(query, key, value, dropout_p):
        return attention_in_float32(query, key, value, attn_mask, is_causal, scale)
    if attn_mask is not None and attn_mask.dtype is not DType.bool:
        return attention_with_float_mask(query, key, value, attn_mask, dropout_p, is_causal, scale)
    if dropout_p:
        return attention_with_weights(query, key, value, attn_mask, dropout_p, is_causal, scale)[0]
    masks = () if attn_mask is None else (attn_mask,)
    return apply("nn.scaled_dot_product_attention", query, key, value, *masks, causal=is_causal, scale=scale)


def attention_with_weights(query: Tensor, key: Tensor, value: Tensor, keep: Tensor | None, p: float, causal: bool,
                           scale: float | None = None) -> tuple[Tensor, Tensor]:
    """``(output, weights)``: PyTorch's math path, the fused op's decomposition with dropout between the softmax and
    the weighted sum, ``weights = dropout(softmax(where(keep, (q scale) k^T, -1e9)))``, ``output = weights v``; each op
    a primitive with its own gradient. For attention dropout and ``MultiheadAttention(need_weights=True)``."""
    queries, keys = query.shape[-2], key.shape[-2]
    scores = (query * (scale if scale is not None else 1 / np.sqrt(query.shape[-1]))) @ key.transpose(-2, -1)
    masks = ([keep] if keep is not None else []) + ([causal_keep(queries, keys)] if causal else [])
    for mask in masks[:-1]:
        scores = apply("tensor.where", mask, scores, np.asarray(MASKED_SCORE, scores.dtype.numpy))
    weights = dropout(apply("nn.masked_softmax", scores, masks[-1]) if masks else apply("nn.softmax", scores, axis=-1), p)
    return weights @ value, weights


def logical_not(input: Tensor) -> Tensor:
    return apply("tensor.equal", input, np.asarray(False))


# Convolution ------------------------------------------------------------------


@autocasts("conv2d")
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """``(N, C, H, W)`` (or unbatched ``(C, H, W)``) by weight ``(O, C/groups, KH, KW)``; ``padding`` may be ints,
    ``"valid"`` or ``"same"`` (stride 1; an odd total puts the extra zero at the end, as PyTorch)."""
    check_conv_rank("conv2d", input, 2)
    if input.ndim == 3:
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    check_conv_channels(input, weight, groups)
    input, padding = same_padding("conv2d", input, padding, tuple(weight.shape[2:]), _pair(stride), _pair(dilation))
    convolve = lambda x, w: apply("tensor.conv2d", x, w, stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation), groups=groups)
    if bias is None:
        return convolve(input, weight)
    return bias_added_in_opmath(lambda x, w, b: convolve(x, w) + b.reshape(1, -1, 1, 1), input, weight, bias)  # autocast: one rounding


def same_padding(function: str, input: Tensor, padding: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
                 dilation: tuple[int, ...]) -> tuple[Tensor, Any]:
    """``(input, symmetric padding)`` for PyTorch's ``"valid"`` (none) and ``"same"`` (output size = input size):
    ``dilation (K - 1)`` zeros per axis, half on each side; an odd total pads the input's end once more itself."""
    if not isinstance(padding, str):
        return input, padding
    if padding == "valid":
        return input, 0
    if padding != "same":
        raise located_error(f"{function}: padding must be ints, 'valid' or 'same', got {padding!r}")
    if any(s != 1 for s in stride):
        raise located_error(f"{function}: padding='same' needs stride 1, got stride {stride} (as PyTorch)")
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if any(total % 2 for total in totals):
        input = pad(input, tuple(v for total in reversed(totals) for v in (0, total % 2)))
    return input, tuple(total // 2 for total in totals)


def edge_pads(padding: Any, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
    """``F.pad``'s pads (last axis first) for a convolution's ``padding`` (ints, ``"valid"`` or ``"same"``), for
    PyTorch's ``padding_mode`` other than zeros, which pads the input first and convolves without padding."""
    if padding == "valid":
        return (0,) * (2 * len(kernel))
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple(v for total in reversed(totals) for v in (total // 2, total - total // 2))
    return tuple(v for p in reversed(padding) for v in (p, p))


# Dropout, batch norm ------------------------------------------------------------


@honors_inplace
def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed: Tensor | None = None) -> Tensor:
    """Zero elements with probability ``p`` and scale the rest by ``1/(1-p)``; traces nothing unless training with ``p > 0``.

    The mask comes from ``seed`` (a scalar int64 tensor) or else from the traced graph's ``rng_seed`` input,
    which ``compile_train_step`` feeds with a fresh seed each step. ``p = 1`` zeroes everything, as PyTorch's
    ``input * 0`` (a NaN stays NaN; the gradient is 0).
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0.0
    from kiln.frontend.trace import TraceContext

    context = TraceContext.current()
    if seed is None:
        seed_value, stream = context.random_seed()
        seed = Tensor(seed_value)
    else:
        stream, context.random_streams = context.random_streams, context.random_streams + 1
    if input.dtype.is_half or (context.eager and context.grad_enabled):
        # x * mask, the mask dropout of ones: a half mask holds 1 / (1 - p) rounded to the half dtype, as PyTorch
        # scales; eager, the backward reads the kept mask (dx = g * mask, PyTorch's saved mask) instead of drawing it
        # again from (seed, stream) (the same numbers: x * mask is x * where(u >= p, 1 / (1 - p), 0) either way)
        return input * apply("nn.dropout", _ones_like(input, context.eager), seed, p=p, stream=stream)
    return apply("nn.dropout", input, seed, p=p, stream=stream)


def _ones_like(input: Tensor, eager: bool) -> Tensor:
    """Ones of ``input``'s shape and dtype: eager, a leaf holding a broadcast view (no ops to run); traced, its ops."""
    one = np.ones((), input.dtype.numpy)
    if eager:
        from kiln.frontend.eager_values import eager_leaf

        return eager_leaf(np.broadcast_to(one, tuple(input.shape)))
    return apply("tensor.broadcast_to", apply("tensor.constant", value=one), shape=input.shape)


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """PyTorch's ``batch_norm`` over channel axis 1. In training, batch statistics normalize and, if running
    statistics are given (module ``Buffer``s), their updated values are recorded for the training step to write back.
    Traced for a batch sharded over data-parallel ranks (``DataParallel``), the statistics are the global batch's
    (``SyncBatchNorm``, see ``frontend/sync_batch_norm.py``). A half input with float32 weights and statistics
    computes in float32 and keeps the input's dtype (``mixed_norm``)."""
    from kiln.frontend.trace import TraceContext

    if mixed_dtypes(input, weight, bias, running_mean, running_var):
        return mixed_norm(lambda x, *rest: batch_norm(x, *rest, training=training, momentum=momentum, eps=eps),
                          input, running_mean, running_var, weight, bias)
    channels = (input.shape[1],)
    weight = weight if weight is not None else _filled(1.0, channels, input)
    bias = bias if bias is not None else _filled(0.0, channels, input)
    if training:
        ranks = TraceContext.current().data_parallel_ranks
        if ranks > 1:
            return sync_batch_norm(input, running_mean, running_var, weight, bias, momentum, eps, ranks)
        verify_batch_size(input)
        output = apply("nn.batch_norm", input, weight, bias, eps=eps)
        if running_mean is not None and running_var is not None:
            _update_running_statistics(input, running_mean, running_var, momentum)
        return output
    if running_mean is None or running_var is None:
        raise TraceError("batch_norm in eval mode needs running_mean and running_var")
    # y = (x - running_mean) / sqrt(running_var + eps) * weight + bias
    shape = (-1,) + (1,) * (input.ndim - 2)
    scale = rsqrt(running_var + eps) * weight
    return (input - running_mean.reshape(shape)) * scale.reshape(shape) + bias.reshape(shape)


def _update_running_statistics(input: Tensor, running_mean: Tensor, running_var: Tensor, momentum: float) -> None:
    """``running = (1 - momentum) running + momentum batch``, the variance unbiased (``n / (n - 1)``), as PyTorch."""
    axes = (0,) + tuple(range(2, input.ndim))
    mean = input.mean(axes)
    centered = input - mean.reshape((-1,) + (1,) * (input.ndim - 2))
    count = apply("tensor.numel", input, axes=axes, dtype=input.dtype)
    record_running_statistics(running_mean, running_var, mean, (centered * centered).sum(axes) / (count - 1.0), momentum)


__all__ = [
    "abs", "amin", "argmax", "avg_pool2d", "batch_norm", "cat", "chunk", "clamp", "clip", "concat", "conv2d", "dropout", "embedding",
    "erf", "flatten", "gelu", "getitem", "layer_norm", "logical_not", "max_pool2d", "narrow", "one_hot", "pad", "rsqrt",
    "scaled_dot_product_attention", "split", "squeeze", "stack", "tril", "triu", "unsqueeze",
]
