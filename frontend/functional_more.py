"""The last of ``torch.nn.functional``: fractional max pooling, ``multi_head_attention_forward`` and
``native_channel_shuffle``.

```
fractional_max_pool   per (n, c) and spatial dim, a sample u in [0, 1) places the windows (PyTorch's formula):
                      start_i = int((i + u) a) - int(u a) for i < out - 1, start_{out-1} = in - k,  a = (in - k) / (out - 1)
                      each window is gathered by index (the starts are traced values), then the max over its k^d cells;
                      the gradient flows through the gather to the maximum cell of each window, as PyTorch's
multi_head_attention  MultiheadAttention's math on explicit weights, sequence-first (L, N, E) or unbatched (L, E)
```
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.frontend.functional import linear
from kiln.frontend.functional_attention_paths import attention_with_bias, nan_rows_attending_nothing
from kiln.frontend.functional_nn import attention_with_weights, cat, scaled_dot_product_attention
from kiln.frontend.functional_spatial import channel_shuffle
from kiln.frontend.module import ArrayLeaf, _to_numpy
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import TraceContext, located_error
from kiln.frontend.autocast import autocasts

# Fractional max pooling ----------------------------------------------------------------------------------------------


@autocasts("fractional_max_pool2d")
def fractional_max_pool2d_with_indices(input: Tensor, kernel_size: Any, output_size: Any = None, output_ratio: Any = None,
                                       return_indices: bool = False, _random_samples: Any = None) -> tuple[Tensor, Tensor]:
    """``(output, indices)`` of PyTorch's fractional max pooling over ``(N, C, H, W)`` or ``(C, H, W)``; the indices
    are flat ``h W + w`` positions in each plane. The samples ``(N, C, 2)`` (width's first, as PyTorch's) are
    ``_random_samples`` when given, else drawn from the traced step's seed."""
    return _fractional_max_pool("fractional_max_pool2d", 2, input, kernel_size, output_size, output_ratio, _random_samples)


def fractional_max_pool2d(input: Tensor, kernel_size: Any, output_size: Any = None, output_ratio: Any = None,
                          return_indices: bool = False, _random_samples: Any = None) -> Any:
    """``torch.nn.functional.fractional_max_pool2d``: see ``fractional_max_pool2d_with_indices``."""
    pooled = fractional_max_pool2d_with_indices(input, kernel_size, output_size, output_ratio, True, _random_samples)
    return pooled if return_indices else pooled[0]


@autocasts("fractional_max_pool3d")
def fractional_max_pool3d_with_indices(input: Tensor, kernel_size: Any, output_size: Any = None, output_ratio: Any = None,
                                       return_indices: bool = False, _random_samples: Any = None) -> tuple[Tensor, Tensor]:
    """``(output, indices)`` over ``(N, C, T, H, W)`` or ``(C, T, H, W)``; samples ``(N, C, 3)`` in ``T, H, W`` order,
    indices flat ``(t H + h) W + w``."""
    return _fractional_max_pool("fractional_max_pool3d", 3, input, kernel_size, output_size, output_ratio, _random_samples)


def fractional_max_pool3d(input: Tensor, kernel_size: Any, output_size: Any = None, output_ratio: Any = None,
                          return_indices: bool = False, _random_samples: Any = None) -> Any:
    """``torch.nn.functional.fractional_max_pool3d``: see ``fractional_max_pool3d_with_indices``."""
    pooled = fractional_max_pool3d_with_indices(input, kernel_size, output_size, output_ratio, True, _random_samples)
    return pooled if return_indices else pooled[0]


def _fractional_max_pool(function: str, dims: int, input: Tensor, kernel_size: Any, output_size: Any, output_ratio: Any,
                         samples: Any) -> tuple[Tensor, Tensor]:
    if input.ndim == dims + 1:
        output, indices = _fractional_max_pool(function, dims, input.unsqueeze(0), kernel_size, output_size, output_ratio, samples)
        return output.squeeze(0), indices.squeeze(0)
    if input.ndim != dims + 2 or not input.dtype.is_float:
        raise located_error(f"{function}: expected a floating-point {dims + 1}D or {dims + 2}D input, got {input.type}")
    sizes = tuple(input.shape[2:])
    if any(not isinstance(s, int) for s in sizes):
        raise located_error(f"{function} needs static spatial dims, got {input.type}")
    kernel = _tuple(function, "kernel_size", kernel_size, dims)
    out = _output_size(function, dims, sizes, output_size, output_ratio)
    for name, size, k, o in zip("THW"[-dims:], sizes, kernel, out):
        if o + k - 1 > size:
            raise located_error(f"{function}(): pool {name} size {k} too large relative to input size {size} for output size {o}")
    u = _samples(function, dims, input, samples)
    sample_of = [1, 0] if dims == 2 else [0, 1, 2]  # PyTorch's 2-D samples are (width, height), its 3-D ones (T, H, W)
    starts = [_starts(u[..., sample_of[axis]], size, k, o) for axis, (size, k, o) in enumerate(zip(sizes, kernel, out))]
    return _pool_windows(input, starts, kernel, out)


def _tuple(function: str, name: str, value: Any, dims: int) -> tuple:
    values = (value,) * dims if isinstance(value, (int, float, np.integer, np.floating)) else tuple(value)
    if len(values) != dims:
        raise located_error(f"{function}: {name} must be a number or a tuple of {dims}, got {value!r}")
    return values


def _output_size(function: str, dims: int, sizes: tuple[int, ...], output_size: Any, output_ratio: Any) -> tuple[int, ...]:
    """``output_size``, or ``int(size * ratio)`` per dim, as PyTorch's."""
    if output_size is None and output_ratio is None:
        raise located_error(f"{function} requires specifying either an output_size or an output_ratio")
    if output_size is not None:
        return tuple(int(o) for o in _tuple(function, "output_size", output_size, dims))
    ratios = _tuple(function, "output_ratio", output_ratio, dims)
    return tuple(int(size * float(ratio)) for size, ratio in zip(sizes, ratios))


def _samples(function: str, dims: int, input: Tensor, samples: Any) -> Tensor:
    """``(N, C, dims)`` samples in ``[0, 1)`` in the input's dtype: given, or drawn from the step's seed."""
    if samples is None:
        seed, stream = TraceContext.current().random_seed()
        ones = apply("tensor.constant", value=np.ones((1, 1, 1), input.dtype.numpy))
        like = apply("tensor.broadcast_to", ones, shape=(input.shape[0], input.shape[1], dims))
        return apply("tensor.random_uniform", Tensor(seed), like, dtype=input.dtype, stream=stream)
    if isinstance(samples, ArrayLeaf):  # a module's _random_samples buffer: a graph input, as its other state
        samples = Tensor(TraceContext.current().current_value_of(samples))
    if not isinstance(samples, Tensor):
        samples = apply("tensor.constant", value=np.asarray(_to_numpy(samples), input.dtype.numpy))
    if samples.ndim != 3 or samples.shape[1:] != (input.shape[1], dims) or samples.shape[0] != input.shape[0]:
        raise located_error(f"{function}: _random_samples must be (N, C, {dims}) = {(input.shape[0], input.shape[1], dims)}, "
                            f"got {samples.type}" + ("; fixed samples need a fixed batch: pass batch_dim=None to kiln.compile"
                                                     if isinstance(input.shape[0], str) else ""))
    return samples.to(input.dtype)


def _starts(u: Tensor, size: int, kernel: int, out: int) -> Tensor:
    """``(N, C, out)`` int64 window starts: ``int((i + u) a) - int(u a)``, the last ``size - kernel``."""
    dtype = u.dtype.numpy
    last = apply("tensor.constant", value=np.full((1, 1, 1), size - kernel, np.int64))
    if out == 1:
        return apply("tensor.broadcast_to", last, shape=tuple(u.shape) + (1,))
    alpha = np.asarray((size - kernel) / (out - 1), dtype)
    positions = apply("tensor.constant", value=np.arange(out - 1, dtype=dtype))
    u = u.unsqueeze(-1)
    first = ((positions + u) * alpha).floor() - (u * alpha).floor()  # both products are >= 0: floor is int()'s truncation
    return cat([first.to("int64"), apply("tensor.broadcast_to", last, shape=tuple(u.shape))], -1)


def _pool_windows(input: Tensor, starts: list[Tensor], kernel: tuple[int, ...], out: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Gather each window ``(N, C, O1, k1, O2, k2, ...)``, then the max and its flat index in the plane."""
    n, c, *sizes = input.shape
    dims = len(sizes)
    windows = input
    for axis, (start, k, o) in enumerate(zip(starts, kernel, out)):
        offsets = apply("tensor.constant", value=np.arange(k, dtype=np.int64))
        cell = start.unsqueeze(-1) + offsets  # (N, C, o, k): the input positions along this axis
        index = cell.reshape(n, c, *([1] * (2 * axis)), o * k, *([1] * (dims - axis - 1)))
        shape = list(windows.shape)
        shape[2 + 2 * axis] = o * k
        windows = windows.gather(2 + 2 * axis, apply("tensor.broadcast_to", index, shape=tuple(shape)))
        windows = windows.reshape(*windows.shape[: 2 + 2 * axis], o, k, *windows.shape[3 + 2 * axis:])
    order = [0, 1] + [2 + 2 * a for a in range(dims)] + [3 + 2 * a for a in range(dims)]
    flat = windows.permute(*order).reshape(n, c, *out, int(np.prod(kernel)))
    best = flat.argmax(-1, keepdim=True)
    return flat.amax(-1), _flat_index(best.squeeze(-1), starts, kernel, out, sizes)


def _flat_index(best: Tensor, starts: list[Tensor], kernel: tuple[int, ...], out: tuple[int, ...], sizes: list[int]) -> Tensor:
    """The plane position of each window's maximum: per axis its window's start plus the offset within it, then
    ``(p1 S2 + p2) S3 + p3``."""
    dims, index, remainder = len(kernel), None, best
    for axis in range(dims):
        stride = int(np.prod(kernel[axis + 1:]))
        offset = remainder // stride
        remainder = remainder - offset * stride
        grid = [1] * dims
        grid[axis] = out[axis]
        position = starts[axis].reshape(*starts[axis].shape[:2], *grid) + offset
        index = position if index is None else index * sizes[axis] + position
    return index


# Multi-head attention -------------------------------------------------------------------------------------------------


def multi_head_attention_forward(query: Tensor, key: Tensor, value: Tensor, embed_dim_to_check: int, num_heads: int,
                                 in_proj_weight: Tensor | None, in_proj_bias: Tensor | None, bias_k: Tensor | None,
                                 bias_v: Tensor | None, add_zero_attn: bool, dropout_p: float, out_proj_weight: Tensor,
                                 out_proj_bias: Tensor | None, training: bool = True, key_padding_mask: Any = None,
                                 need_weights: bool = True, attn_mask: Any = None, use_separate_proj_weight: bool = False,
                                 q_proj_weight: Tensor | None = None, k_proj_weight: Tensor | None = None,
                                 v_proj_weight: Tensor | None = None, static_k: Any = None, static_v: Any = None,
                                 average_attn_weights: bool = True, is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
    """``torch.nn.functional.multi_head_attention_forward``: ``(output, weights)`` of ``MultiheadAttention``'s math on
    the given weights, for ``(L, N, E)`` inputs (or unbatched ``(L, E)``); ``bias_k``/``bias_v`` append a key and a
    value, ``add_zero_attn`` a zero one, as PyTorch's. ``static_k``/``static_v`` (``(N * num_heads, S, E / num_heads)``,
    unbatched ``(num_heads, S, E / num_heads)``) replace the projected, head-split keys/values (no projection is
    computed for them); a zero key/value is still appended after them, and they refuse ``bias_k``/``bias_v``."""
    from kiln.frontend.layers_transformer import check_attention_masks  # it imports F

    padding = key_padding_mask if static_k is None else None  # static keys set the key count it is checked against (below)
    check_attention_masks(query, key, padding, attn_mask, num_heads, batch_first=False)  # torch's, at the user's line
    if query.ndim == 2:
        masks = key_padding_mask if key_padding_mask is None else _as_bool("key_padding_mask", key_padding_mask).unsqueeze(0)
        output, weights = multi_head_attention_forward(
            query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1), embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
            bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training, masks, need_weights, attn_mask,
            use_separate_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight, static_k, static_v, average_attn_weights, is_causal)
        return output.squeeze(1), None if weights is None else weights.squeeze(0)
    embed_dim = _check_attention("multi_head_attention_forward", query, key, value, embed_dim_to_check, num_heads)
    if is_causal and attn_mask is None:
        raise located_error("multi_head_attention_forward: Need attn_mask if specifying the is_causal hint (PyTorch's rule); "
                            "pass the causal mask as attn_mask")
    weights_of = _projection_weights(embed_dim, in_proj_weight, use_separate_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight)
    biases = [None] * 3 if in_proj_bias is None else [in_proj_bias[i * embed_dim:(i + 1) * embed_dim] for i in range(3)]
    statics = (None, _static_heads("static_k", static_k, query, num_heads), _static_heads("static_v", static_v, query, num_heads))
    q, k, v = (linear(x.transpose(0, 1), w, b) if static is None else None  # (N, L, E)
               for x, w, b, static in zip((query, key, value), weights_of, biases, statics))
    from kiln.frontend.layers_transformer import additive_attention_bias, attention_keep_mask, check_key_padding_mask  # it imports F

    bias = additive_attention_bias(key_padding_mask, attn_mask, num_heads, query.dtype)  # a float mask torch adds
    if bias is None:
        key_padding_mask, attn_mask = _as_bool("key_padding_mask", key_padding_mask), _as_bool("attn_mask", attn_mask)

    check_key_padding_mask(key_padding_mask, query.shape[1], key.shape[0] if static_k is None else static_k.shape[1])
    if (bias_k is None) != (bias_v is None):
        raise located_error("multi_head_attention_forward: bias_k and bias_v must be given together")
    if bias_k is not None:
        if static_k is not None or static_v is not None:
            raise located_error("multi_head_attention_forward: bias_k and bias_v cannot be added to a static key or value "
                                "(PyTorch's rule); append the bias to static_k and static_v yourself")
        k, v = (cat([x, apply("tensor.broadcast_to", bias.reshape(1, 1, embed_dim), shape=(x.shape[0], 1, embed_dim))], 1)
                for x, bias in ((k, bias_k), (v, bias_v)))
        key_padding_mask, attn_mask, bias = _pad_mask(key_padding_mask), _pad_mask(attn_mask), _pad_bias(bias)
    q, k, v = (_heads(x, num_heads) if static is None else static for x, static in zip((q, k, v), statics))
    if add_zero_attn:
        k, v = (cat([x, x[:, :, :1] * 0.0], 2) for x in (k, v))
        key_padding_mask, attn_mask, bias = _pad_mask(key_padding_mask), _pad_mask(attn_mask), _pad_bias(bias)
    p = dropout_p if training else 0.0
    if bias is not None:
        heads, weights = attention_with_bias(q, k, v, bias, p, False, need_weights)
        output = _attention_output(heads, out_proj_weight, out_proj_bias)
        return output, None if weights is None else weights.mean(1) if average_attn_weights else weights
    keep = attention_keep_mask(key_padding_mask, attn_mask, num_heads)
    if not need_weights:
        heads = scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)
        return _attention_output(heads, out_proj_weight, out_proj_bias), None
    heads, weights = nan_rows_attending_nothing(*attention_with_weights(q, k, v, keep, p, False), keep, False, k.shape[-2])
    return _attention_output(heads, out_proj_weight, out_proj_bias), weights.mean(1) if average_attn_weights else weights


def _check_attention(function: str, query: Tensor, key: Tensor, value: Tensor, embed_dim_to_check: int, num_heads: int) -> int:
    if query.ndim != 3 or key.ndim != 3 or value.ndim != 3:
        raise located_error(f"{function}: query, key and value must all be (L, N, E) or all unbatched (L, E), "
                            f"got {query.type}, {key.type}, {value.type}")
    embed_dim = query.shape[-1]
    if embed_dim != embed_dim_to_check:
        raise located_error(f"{function}: was expecting embedding dimension of {embed_dim_to_check}, but got {embed_dim}")
    if embed_dim % num_heads:
        raise located_error(f"{function}: embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if key.shape[0] != value.shape[0]:
        raise located_error(f"{function}: key's sequence and batch dims {key.type} do not match value's {value.type}")
    return embed_dim


def _static_heads(name: str, static: Any, query: Tensor, num_heads: int) -> Tensor | None:
    """A static key or value ``(N * num_heads, S, head_dim)`` as ``(N, num_heads, S, head_dim)`` (row ``n * num_heads +
    h`` is head ``h`` of example ``n``, as PyTorch lays them out), after checking its shape against ``query``'s."""
    if static is None:
        return None
    batch, head_dim = query.shape[1], query.shape[2] // num_heads
    rows = batch * num_heads if isinstance(batch, int) else f"{batch} * {num_heads}"
    static = static if isinstance(static, Tensor) else query.new_tensor(static)
    if static.ndim != 3 or static.shape[2] != head_dim or (isinstance(batch, int) and static.shape[0] != rows):
        raise located_error(f"multi_head_attention_forward: {name} must be (N * num_heads, S, E / num_heads) = ({rows}, S, "
                            f"{head_dim}) for the query {query.type} and {num_heads} heads, got {static.type}")
    return static.reshape((batch if isinstance(batch, int) else -1, num_heads) + tuple(static.shape[1:]))


def _projection_weights(embed_dim: int, in_proj_weight: Any, separate: bool, q_weight: Any, k_weight: Any, v_weight: Any) -> list:
    if separate:
        if q_weight is None or k_weight is None or v_weight is None:
            raise located_error("multi_head_attention_forward: use_separate_proj_weight is True but q_proj_weight, "
                                "k_proj_weight or v_proj_weight is None")
        return [q_weight, k_weight, v_weight]
    if in_proj_weight is None:
        raise located_error("multi_head_attention_forward: use_separate_proj_weight is False but in_proj_weight is None")
    return [in_proj_weight[i * embed_dim:(i + 1) * embed_dim] for i in range(3)]


def _as_bool(name: str, mask: Any) -> Tensor | None:
    from kiln.frontend.layers_transformer import boolean_attention_mask

    return boolean_attention_mask(name, mask)


def _pad_bias(bias: Tensor | None) -> Tensor | None:
    """A float bias (``additive_attention_bias``'s) with one more key, 0 for it (the appended bias or zero key)."""
    if bias is None:
        return None
    return cat([bias, apply("tensor.broadcast_to", _zeros_like_column(bias), shape=tuple(bias.shape[:-1]) + (1,))], -1)


def _zeros_like_column(bias: Tensor) -> Tensor:
    return apply("tensor.constant", value=np.zeros((1,) * bias.ndim, bias.dtype.numpy))


def _pad_mask(mask: Tensor | None) -> Tensor | None:
    """A "True = masked out" mask with one more key, not masked (the appended bias or zero key)."""
    if mask is None:
        return None
    column = apply("tensor.constant", value=np.zeros((1,) * mask.ndim, bool))
    return cat([mask, apply("tensor.broadcast_to", column, shape=tuple(mask.shape[:-1]) + (1,))], -1)


def _heads(x: Tensor, heads: int) -> Tensor:
    """``(N, L, E) -> (N, heads, L, E / heads)``."""
    n, length, embed = x.shape
    return x.reshape(n, length, heads, embed // heads).permute(0, 2, 1, 3)


def _attention_output(heads: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``(N, heads, L, D) -> (L, N, E)`` through the output projection."""
    n, count, length, head_dim = heads.shape
    return linear(heads.permute(0, 2, 1, 3).reshape(n, length, count * head_dim), weight, bias).transpose(0, 1)


# Channel shuffle ------------------------------------------------------------------------------------------------------


def native_channel_shuffle(input: Tensor, groups: int) -> Tensor:
    """``torch.nn.functional.native_channel_shuffle``: the same shuffle as ``channel_shuffle``."""
    return channel_shuffle(input, groups)


__all__: Sequence[str] = [
    "fractional_max_pool2d", "fractional_max_pool2d_with_indices", "fractional_max_pool3d", "fractional_max_pool3d_with_indices",
    "multi_head_attention_forward", "native_channel_shuffle",
]
