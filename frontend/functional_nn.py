"""``F.*`` for CNNs and transformers, with PyTorch's names, argument orders and defaults.

Re-exported by ``frontend/functional.py``: ``F.gelu``, ``F.layer_norm``,
``F.embedding``, ``F.scaled_dot_product_attention``, ``F.conv2d``,
``F.max_pool2d``, ``F.cat``, ``F.pad``... Indexing (``x[:, 1:5:2]``) lowers
to ``tensor.slice``, ``tensor.squeeze`` and ``tensor.expand_dims``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType, normalize_axis
from kiln.compiler.ops.transformer import MASKED_SCORE
from kiln.frontend.sync_batch_norm import record_running_statistics, sync_batch_norm
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error
from kiln.frontend.tensor_inplace import honors_inplace
from kiln.frontend.autocast import autocasts
from kiln.frontend.functional_half import mixed_norm
from kiln.frontend.embedding_options import frequency_scaled, renormalize_rows
from kiln.frontend.autocast_policy import pads_from_edges_on_list


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
    return apply("tensor.one_hot", tensor, num_classes=num_classes, dtype=DType.of(dtype))


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
    if mixed_dtypes(input, weight, bias):
        return mixed_norm(lambda x, w, b: layer_norm(x, normalized_shape, w, b, eps), input, weight, bias)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
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
    gets no gradient, as in PyTorch: positions holding it read the row through ``stop_gradient``."""
    _check_embedding_options(sparse)
    if max_norm is not None:
        renormalize_rows(input, weight, max_norm, norm_type, "embedding")
    rows = apply("tensor.take", weight, input, axis=0)
    if scale_grad_by_freq:
        rows = frequency_scaled(rows, input if isinstance(input, Tensor) else apply("tensor.constant", value=np.asarray(input)),
                                weight.shape[0])
    if padding_idx is None:
        return rows
    padding_idx = embedding_padding_index(padding_idx, weight.shape[0])
    keep = input.ne(padding_idx).unsqueeze(-1)
    return apply("tensor.where", keep, rows, rows.detach())


def _check_embedding_options(sparse: bool) -> None:
    if sparse:
        raise TraceError("embedding: sparse=True gradients are not supported; kiln computes the dense gradient (sparse=False)")


def embedding_padding_index(padding_idx: int, num_embeddings: int) -> int:
    """``padding_idx`` in ``[0, num_embeddings)``; negative counts from the end, as PyTorch's."""
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise TraceError(f"embedding: padding_idx {padding_idx} must be within num_embeddings {num_embeddings}")
    return padding_idx % num_embeddings


@autocasts("scaled_dot_product_attention")
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None) -> Tensor:
    """``softmax(q k^T * scale) v``; a bool ``attn_mask`` is True where a query may attend, as PyTorch. ``dropout_p``
    drops attention weights (always, as PyTorch's: a module passes 0 in eval mode)."""
    if attn_mask is not None and attn_mask.dtype is not DType.bool:
        raise TraceError(f"scaled_dot_product_attention needs a bool attn_mask (True = attend), got {attn_mask.type}")
    if not 0 <= dropout_p < 1:
        raise TraceError(f"scaled_dot_product_attention: dropout_p must be in [0, 1), got {dropout_p}")
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
    if causal and (isinstance(queries, str) or isinstance(keys, str)):
        raise TraceError(f"scaled_dot_product_attention: a causal mask needs static sequence lengths, got {query.type} and {key.type}")
    scores = (query * (scale if scale is not None else 1 / np.sqrt(query.shape[-1]))) @ key.transpose(-2, -1)
    masks = ([keep] if keep is not None else []) + ([apply("tensor.constant", value=np.tril(np.ones((queries, keys), bool)))] if causal else [])
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
    if input.ndim == 3:
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0)
    input, padding = same_padding("conv2d", input, padding, tuple(weight.shape[2:]), _pair(stride), _pair(dilation))
    output = apply("tensor.conv2d", input, weight, stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation), groups=groups)
    return output if bias is None else output + bias.reshape(1, -1, 1, 1)


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


# Pooling ----------------------------------------------------------------------
# PyTorch's 2-D pools on the two ops ``tensor.max_pool2d`` and ``tensor.avg_pool2d`` (symmetric padding at most half
# the kernel, -inf for max; the average divides by the kernel's size). A plain call stays that one op; PyTorch's other
# options are built around it: ``ceil_mode``'s partial last windows pad the bottom and right ends too (-inf for max,
# zeros for the average); where the average's divisor differs from the kernel's size (``ceil_mode``'s clipped windows,
# ``count_include_pad=False``, ``divisor_override``) a constant per window rescales it; a dilated max pool, and one
# returning indices, gathers each window's elements (``tensor.take``) and takes their first largest. The 1-D pools
# (``frontend/functional_pool1d.py``) are ``max_pool_nchw``/``avg_pool_nchw`` over a unit-height image.


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``(N, C, H, W)`` or unbatched ``(C, H, W)``: the largest element of each window (padding counts as -inf), as
    PyTorch; the first largest (row-major) takes the gradient. ``return_indices=True`` also gives each winner's flat
    index into its input plane (``h W + w``), PyTorch's ``(output, indices)``."""
    image = batched_pool_input("max_pool2d", input)
    kernel, stride, padding = _pool_sizes("max_pool2d", kernel_size, stride, padding)
    dilation = _pool_pair("max_pool2d", "dilation", dilation)
    pooled = max_pool_nchw("max_pool2d", image, kernel, stride, padding, dilation, ceil_mode, return_indices)
    return tuple(like_pool_input(t, input) for t in pooled) if return_indices else like_pool_input(pooled, input)


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """``(N, C, H, W)`` or unbatched ``(C, H, W)``: the mean of each window with PyTorch's divisor (the window clipped
    to the padded input, or to the input itself without ``count_include_pad``; ``divisor_override`` if given)."""
    image = batched_pool_input("avg_pool2d", input)
    kernel, stride, padding = _pool_sizes("avg_pool2d", kernel_size, stride, padding)
    pooled = avg_pool_nchw("avg_pool2d", image, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return like_pool_input(pooled, input)


def max_pool_nchw(function: str, image: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                  dilation: tuple[int, int], ceil_mode: bool, return_indices: bool) -> Tensor | tuple[Tensor, Tensor]:
    """``F.max_pool2d`` on a checked ``(N, C, H, W)`` image with its sizes as pairs; errors name ``function``."""
    rows, cols = _pool_axes(function, image, kernel, stride, padding, dilation, ceil_mode)
    if return_indices or dilation != (1, 1):
        return _gathered_max(image, (rows, cols), return_indices)
    if rows.overhang or cols.overhang:
        image = pad(image, (0, cols.overhang, 0, rows.overhang), value=-np.inf)
    return apply("tensor.max_pool2d", image, kernel_size=kernel, stride=stride, padding=padding)


def avg_pool_nchw(function: str, image: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                  ceil_mode: bool, count_include_pad: bool, divisor_override: int | None) -> Tensor:
    """``F.avg_pool2d`` on a checked ``(N, C, H, W)`` image with its sizes as pairs: ``tensor.avg_pool2d`` divides each
    window by ``KH KW``, then, where PyTorch's divisor differs, a constant ``KH KW / divisor`` rescales it."""
    if divisor_override is not None and (not isinstance(divisor_override, (int, np.integer)) or isinstance(divisor_override, bool)
                                         or divisor_override == 0):
        raise located_error(f"{function}: divisor_override must be a nonzero int or None, got {divisor_override!r}")
    rows, cols = _pool_axes(function, image, kernel, stride, padding, (1, 1), ceil_mode)
    if rows.overhang or cols.overhang:
        image = pad(image, (0, cols.overhang, 0, rows.overhang))
    pooled = apply("tensor.avg_pool2d", image, kernel_size=kernel, stride=stride, padding=padding)
    if divisor_override is not None:
        divisors = np.asarray(int(divisor_override))
    else:
        divisors = np.outer(rows.divisors(count_include_pad), cols.divisors(count_include_pad))
    scales = kernel[0] * kernel[1] / divisors
    if np.any(scales != 1):
        pooled = pooled * apply("tensor.constant", value=np.asarray(scales, image.dtype.numpy))
    return pooled


POOL_LAYOUTS = {1: ("(N, C, L)", "(C, L)", "a static length L"), 2: ("(N, C, H, W)", "(C, H, W)", "static H and W")}
"""Per number of spatial dims: the batched and unbatched layouts a pool takes, and what must be static."""


def batched_pool_input(function: str, input: Tensor, spatial: int = 2) -> Tensor:
    """``input`` as ``(N, C, *spatial)``: PyTorch's pools also take an unbatched ``(C, *spatial)``. The spatial dims
    must be static and the input floating-point."""
    batched, unbatched, static = POOL_LAYOUTS[spatial]
    if input.ndim not in (spatial + 1, spatial + 2):
        raise located_error(f"{function} expects an {batched} or unbatched {unbatched} input, got {input.type}")
    if any(isinstance(size, str) for size in input.shape[-spatial:]):
        raise located_error(f"{function} needs {static}, got {input.type}")
    if not input.dtype.is_float:
        raise located_error(f"{function} needs a floating-point input, got {input.type}; cast it first (x.float())")
    return input if input.ndim == spatial + 2 else input.unsqueeze(0)


def like_pool_input(output: Tensor, input: Tensor, spatial: int = 2) -> Tensor:
    """Drop the batch dim ``batched_pool_input`` added to an unbatched input."""
    return output if input.ndim == spatial + 2 else output.squeeze(0)


def _pool_sizes(function: str, kernel_size: Any, stride: Any, padding: Any) -> tuple[tuple[int, int], ...]:
    """``(kernel, stride, padding)`` as pairs; an omitted (None or empty) stride is the kernel, as PyTorch's."""
    kernel = _pool_pair(function, "kernel_size", kernel_size)
    omitted = stride is None or (isinstance(stride, (tuple, list)) and not stride)
    return kernel, kernel if omitted else _pool_pair(function, "stride", stride), _pool_pair(function, "padding", padding)


def _pool_pair(function: str, name: str, value: Any) -> tuple[int, int]:
    """PyTorch's 2-d pool sizes: an int, or a tuple of one or two ints, as ``(height, width)``."""
    values = (value,) if isinstance(value, (int, np.integer)) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(values) not in (1, 2) or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
        raise located_error(f"{function}: {name} must be an int or a tuple of one or two ints, got {value!r}")
    return int(values[0]), int(values[-1])


@dataclass(frozen=True)
class _PoolAxis:
    """One spatial axis of PyTorch's pooling windows: window ``o`` reads positions ``o stride - padding + j dilation``
    (``j < kernel``) of an axis of ``length``, those outside ``[0, length)`` in the padding; ``count`` windows
    (``ceil_mode`` keeps a last, partial one)."""

    length: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    count: int

    @property
    def overhang(self) -> int:
        """How far ``ceil_mode``'s last window reaches past the end padding: elements to pad there too."""
        reach = (self.count - 1) * self.stride + self.dilation * (self.kernel - 1) + 1
        return max(0, reach - (self.length + 2 * self.padding))

    def starts(self) -> np.ndarray:
        return np.arange(self.count) * self.stride - self.padding

    def positions(self) -> np.ndarray:
        """``(count, kernel)``: each window's positions on the axis."""
        return self.starts()[:, None] + np.arange(self.kernel)[None, :] * self.dilation

    def first_nonnegative(self) -> np.ndarray:
        """Each window's first position ``>= 0`` (past the end if the dilation steps over the whole axis)."""
        starts = self.starts()
        return starts + np.maximum(0, -(starts // self.dilation)) * self.dilation

    def divisors(self, count_include_pad: bool) -> np.ndarray:
        """PyTorch's ``avg_pool`` divisor per window along this axis: the window clipped to the padded axis, or,
        without ``count_include_pad``, to the axis itself."""
        starts = self.starts()
        stops = np.minimum(starts + self.kernel, self.length + self.padding)
        if count_include_pad:
            return stops - starts
        return np.minimum(stops, self.length) - np.maximum(starts, 0)


def _pool_axes(function: str, image: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int], ceil_mode: bool) -> tuple[_PoolAxis, _PoolAxis]:
    """The windows along H (dim -2) and W (dim -1) of ``image``, checked as PyTorch checks them."""
    return tuple(_pool_axis(function, axis - 2, int(image.shape[axis + 2]), kernel[axis], stride[axis], padding[axis],
                            dilation[axis], ceil_mode) for axis in range(2))


def _pool_axis(function: str, dim: int, length: int, kernel: int, stride: int, padding: int, dilation: int,
               ceil_mode: bool) -> _PoolAxis:
    """PyTorch's ``pool2d_shape_check`` and ``pooling_output_shape`` for one axis: with ``ceil_mode`` a last window
    may run past the end, as long as it starts inside the input or its left padding."""
    if kernel <= 0 or stride <= 0 or dilation <= 0 or padding < 0:
        raise located_error(f"{function}: kernel_size {kernel}, stride {stride} and dilation {dilation} along dim {dim} must be "
                            f"positive and padding {padding} non-negative")
    if padding > kernel // 2:  # PyTorch's rule, whatever the dilation (which implies its other: half the window's reach)
        raise located_error(f"{function}: padding {padding} along dim {dim} must be at most half of kernel_size {kernel}, as "
                            f"PyTorch requires; pad the input with F.pad first for more")
    span = length + 2 * padding - dilation * (kernel - 1) - 1
    count = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (count - 1) * stride >= length + padding:
        count -= 1  # it would start in the end padding
    if count <= 0:
        raise located_error(f"{function}: a window of {kernel} (dilation {dilation}) does not fit dim {dim} of size {length} padded "
                            f"by {padding}; use a smaller kernel_size or dilation, or more padding")
    return _PoolAxis(length, kernel, stride, padding, dilation, count)


def _gathered_max(image: Tensor, axes: Sequence[_PoolAxis], return_indices: bool) -> Tensor | tuple[Tensor, Tensor]:
    """The max pool as a gather over the spatial ``axes`` of ``(N, C, *spatial)`` (two for ``max_pool2d``, three for
    ``max_pool3d``): each window's elements taken from the flattened volume (``tensor.take``), their first largest
    (``Tensor.max(dim)``) the value that takes the gradient. A slot in the padding reads the window's first element
    instead, which changes neither the max nor where it first occurs, so the padding needs no -inf and, as PyTorch,
    an all -inf window's index and gradient go to its first element. The indices are a constant table read at the
    winning slots."""
    batch, channels, volume = image.shape[0], image.shape[1], int(np.prod([axis.length for axis in axes]))
    counts, window = tuple(axis.count for axis in axes), int(np.prod([axis.kernel for axis in axes]))
    reads, indices, inside = _window_reads(axes)
    flat = image.reshape(batch, channels, volume)
    if (reads == volume).any():
        flat = pad(flat, (0, 1), value=-np.inf)  # what a window of padding only reads
    windows = apply("tensor.take", flat, apply("tensor.constant", value=reads.reshape(-1)), axis=2)
    values, slots = window_max(windows.reshape((batch, channels) + counts + (window,)), inside)
    if not return_indices:
        return values
    window_starts = np.arange(int(np.prod(counts)), dtype=np.int64).reshape(counts) * window
    table = apply("tensor.constant", value=indices.reshape(-1))
    return values, apply("tensor.take", table, slots + apply("tensor.constant", value=window_starts), axis=0)


def window_max(windows: Tensor, inside: np.ndarray | None = None) -> tuple[Tensor, Tensor]:
    """Each window's (the last dim's) winner as PyTorch's max pools pick it: the last NaN of a window holding one
    (its kernels keep ``val > max || isnan(val)``), else the first largest element. Returns its value, which alone
    takes the gradient (the window summed with the others masked to -0.0, as ``Tensor.max(dim)``), and its slot.
    ``inside`` (broadcast to the windows) marks the slots that may hold a NaN winner: a slot standing in for the
    padding repeats another element and must not win twice."""
    width = int(windows.shape[-1])
    slots = windows.argmax(-1, keepdim=True)
    nan = windows != windows
    if inside is not None:
        nan = nan & apply("tensor.constant", value=np.asarray(inside, bool))
    after_last_nan = apply("tensor.where", nan, apply("tensor.constant", value=np.arange(1, width + 1, dtype=np.int64)), 0)
    after_last_nan = after_last_nan.amax(-1, keepdim=True)
    slots = apply("tensor.where", after_last_nan > 0, after_last_nan - 1, slots)
    others = apply("tensor.not_equal", apply("tensor.constant", value=np.arange(width, dtype=np.int64)), slots)
    values = apply("tensor.where", others, np.asarray(-0.0), windows).sum(-1)
    return values, slots.squeeze(-1)


def _window_reads(axes: Sequence[_PoolAxis]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(O_1, ..., O_k, K_1 ... K_k)`` three times, slots row-major: where each window slot reads in the flattened
    volume, PyTorch's index for it, and whether it is inside the input. Inside the input both are the slot's own
    row-major flat index (``h W + w`` in 2-D); in the padding both are the window's first element, PyTorch's starting
    index (its first positions ``>= 0`` on every axis). For a window of padding only that index lies past the volume,
    as PyTorch's, and the slots read the volume's size: an appended -inf."""
    rank, lengths = len(axes), [axis.length for axis in axes]
    strides = np.cumprod((1,) + tuple(lengths[:0:-1]))[::-1]
    counts = tuple(axis.count for axis in axes)
    inside, flat, first = np.ones((1,) * 2 * rank, bool), 0, 0
    for index, (axis, stride) in enumerate(zip(axes, strides)):
        shape = [1] * 2 * rank
        shape[index], shape[rank + index] = axis.count, axis.kernel
        positions = axis.positions().reshape(shape)
        inside = inside & (positions >= 0) & (positions < axis.length)
        flat = flat + positions * int(stride)
        first = first + axis.first_nonnegative().reshape(shape[:rank] + [1] * rank) * int(stride)
    full = counts + tuple(axis.kernel for axis in axes)
    inside = np.broadcast_to(inside, full)
    indices = np.broadcast_to(np.where(inside, flat, first), full).reshape(counts + (-1,)).astype(np.int64)
    inside = inside.reshape(counts + (-1,))
    empty = ~inside.any(-1)
    return np.where(empty[..., None], int(np.prod(lengths)), indices).astype(np.int64), indices, inside


# Movement ---------------------------------------------------------------------


@autocasts("cat")
def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return apply("tensor.concat", *tensors, axis=dim)


concat = cat


@autocasts("stack")
def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """PyTorch's ``stack``: equal-shaped tensors joined along a new axis ``dim`` (``cat`` of each unsqueezed)."""
    if not tensors:
        raise TraceError("stack: expected a non-empty sequence of tensors")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise TraceError(f"stack: every tensor must have the same shape, got {sorted(shapes, key=str)}")
    axis = normalize_axis(dim, tensors[0].ndim + 1)
    return cat([unsqueeze(t, axis) for t in tensors], dim=axis)


def narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    return apply("tensor.slice", input, axis=dim, start=start, stop=start + length, step=1)


def split(tensor: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """PyTorch's ``split``: pieces of ``split_size`` (the last may be shorter) or of the listed sizes."""
    size = tensor.shape[dim]
    if isinstance(size, str):
        raise TraceError(f"split: axis {dim} of {tensor.type} is symbolic; split a static axis")
    sizes = split_size_or_sections
    if isinstance(sizes, int):
        sizes = [min(sizes, size - start) for start in range(0, size, sizes)]
    starts = np.cumsum([0] + list(sizes))
    return tuple(narrow(tensor, dim, int(start), int(length)) for start, length in zip(starts, sizes))


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    size = input.shape[dim]
    return split(input, -(-size // chunks), dim)


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    return apply("tensor.expand_dims", input, axes=(dim,))


def squeeze(input: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Drop the size-1 dims (or those of ``dim`` that have size 1: another size is left as it is, as PyTorch's)."""
    if dim is None:
        axes = tuple(i for i, d in enumerate(input.shape) if d == 1)
    else:
        asked = (dim,) if isinstance(dim, int) else tuple(dim)
        axes = tuple(a for a in asked if not isinstance(input.shape[normalize_axis(a, input.ndim)], int)
                     or input.shape[normalize_axis(a, input.ndim)] == 1)
    return apply("tensor.squeeze", input, axes=axes) if axes else input


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim``; they must be static (the batch dim stays symbolic outside them)."""
    start, end = normalize_axis(start_dim, input.ndim), normalize_axis(end_dim, input.ndim)
    merged = input.shape[start : end + 1]
    if any(isinstance(d, str) for d in merged):
        raise TraceError(f"flatten: dims {start}..{end} of {input.type} include a symbolic dim; flatten static dims only")
    return input.reshape(input.shape[:start] + (int(np.prod(merged)),) + input.shape[end + 1 :])


@autocasts("reflection_pad2d", when=pads_from_edges_on_list)
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """PyTorch's ``pad``: ``(before, after)`` pairs starting from the last dim.

    ``constant`` mode fills with ``value`` (default 0); a negative pad crops, as in PyTorch. The fill is one
    ``tensor.pad`` of the positive pads, then a ``tensor.slice`` per cropped axis (each side of an axis is padded or
    cropped, never both, so the order does not matter; filling first never pads an axis the crop emptied).
    ``reflect``, ``replicate`` and ``circular`` fill from the input's own edges (``frontend/functional_spatial.py``),
    so, as PyTorch, they refuse a nonzero ``value``.
    """
    if mode != "constant":
        if value is not None and value != 0:
            raise located_error(f"pad(mode={mode!r}) fills from the input's edges and takes no value, got value={value!r}; "
                                f"drop value, or use mode='constant' to fill with it")
        from kiln.frontend.functional_spatial import pad_from_edges

        return pad_from_edges(input, pad, mode)
    pairs = _constant_pad_pairs(input, pad)
    low, high = tuple(max(before, 0) for before, _ in pairs), tuple(max(after, 0) for _, after in pairs)
    value = 0.0 if value is None else float(value)
    if any(low + high):
        input = apply("tensor.pad", input, low=low, high=high, interior=(0,) * input.ndim, value=value)
    return _crop(input, pairs)


def _constant_pad_pairs(input: Tensor, pad: Sequence[int]) -> list[tuple[int, int]]:
    """``F.pad``'s flat ``(before, after)`` pairs, last dim first, as one pair per axis in axis order (zeros where
    none is given), checked as PyTorch checks them: a crop may empty an axis but not cut past it."""
    pads = [int(p) for p in pad]
    if len(pads) % 2 or len(pads) // 2 > input.ndim:
        raise located_error(f"pad: {tuple(pads)} must be (before, after) pairs, from the last dim on, for at most the "
                            f"{input.ndim} dims of {input.type}")
    pairs = [(0, 0)] * (input.ndim - len(pads) // 2) + [(pads[i], pads[i + 1]) for i in range(len(pads) - 2, -1, -2)]
    for axis, (size, (before, after)) in enumerate(zip(input.shape, pairs)):
        if isinstance(size, str):
            if before or after:
                raise located_error(f"pad: cannot pad or crop the symbolic dim {size} (dim {axis} of {input.type}); "
                                    f"give it the pair (0, 0) or pad only static dims")
        elif size + min(before, 0) + min(after, 0) < 0:
            raise located_error(f"pad: the negative padding ({before}, {after}) crops more than the {size} elements of "
                                f"dim {axis} of {input.type}")
    return pairs


def _crop(input: Tensor, pairs: list[tuple[int, int]]) -> Tensor:
    """Drop ``-before`` leading and ``-after`` trailing elements of each axis with a negative pad (a narrow)."""
    result = input
    for axis, (before, after) in enumerate(pairs):
        if before < 0 or after < 0:
            size = result.shape[axis]
            result = apply("tensor.slice", result, axis=axis, start=max(-before, 0), stop=size - max(-after, 0), step=1)
    return result


def getitem(input: Tensor, index: Any) -> Tensor:
    """Basic indexing: ints, slices (any step > 0), ``None`` and ``...``; each lowers to one slice/squeeze/expand_dims op.
    Integer index arrays over the leading dims (``x[idx]``, ``x[rows, cols]``, ``x[range(n), y]``) gather, as PyTorch's
    advanced indexing: one ``take`` of the rows at their flat positions (a copy, not a view)."""
    from kiln.frontend.advanced_indexing import mixed_advanced_index  # lazily, as advanced_indices
    from kiln.frontend.tensor_setitem import advanced_indices  # lazily: it builds on the Tensor this file serves

    if _is_bool_mask(index):
        return _masked_rows(input, index)
    advanced = advanced_indices(input, index)
    if advanced is not None:
        return _gathered_rows(input, advanced)
    mixed = mixed_advanced_index(input, index)
    if mixed is not None:
        return mixed
    items = list(index) if isinstance(index, tuple) else [index]
    if any(item is Ellipsis for item in items):
        at = items.index(Ellipsis)
        fill = input.ndim - sum(1 for item in items if item is not None and item is not Ellipsis)
        items = items[:at] + [slice(None)] * fill + items[at + 1 :]
    result, axis, dropped, inserted = input, 0, [], []
    for item in items:
        if item is None:
            inserted.append(axis + len(inserted) - len(dropped))
            continue
        result = _index_axis(result, axis, item)
        if isinstance(item, (int, np.integer)):
            dropped.append(axis)
        axis += 1
    result = squeeze(result, tuple(dropped)) if dropped else result
    result = apply("tensor.expand_dims", result, axes=tuple(inserted)) if inserted else result
    if result is not input:
        result._indexed_from = (input, index)  # an in-place write to it writes input[index] (frontend/tensor_inplace.py)
    return result


def _is_bool_mask(index: Any) -> bool:
    return (isinstance(index, Tensor) and index.dtype is DType.bool) or (isinstance(index, np.ndarray) and index.dtype == np.bool_)


def _masked_rows(input: Tensor, mask: Any) -> Tensor:
    """``input[mask]``: eagerly the rows the mask picks (frontend/eager_data_dependent.py); traced, an error."""
    from kiln.frontend import eager_data_dependent

    if eager_data_dependent.eager_with_mask(input, mask):
        return eager_data_dependent.masked_rows(input, mask)
    raise located_error("x[mask] has a data-dependent shape (the number of true elements), which kiln does not trace; "
                        "use where(mask, x, 0) (or masked_fill) and reduce, e.g. (x * mask).sum() / mask.sum()")


def _gathered_rows(input: Tensor, indices: tuple[Tensor, ...]) -> Tensor:
    """``input[indices]`` for integer index tensors over its leading dims: shape ``broadcast(indices) + rest``."""
    from kiln.frontend.tensor_more import _flat_leading_index  # index_put's: the same flat positions it writes

    flat, rest = _flat_leading_index(input, indices)
    rows = input.reshape((-1,) + rest)
    return apply("tensor.take", rows, flat.reshape(-1), axis=0).reshape(tuple(flat.shape) + rest)


def _index_axis(input: Tensor, axis: int, item: Any) -> Tensor:
    if axis >= input.ndim:
        raise TraceError(f"too many indices for {input.type}")
    size = input.shape[axis]
    if isinstance(item, slice) and item == slice(None):
        return input
    if isinstance(size, str):
        raise TraceError(f"cannot index the symbolic dim {size} of {input.type} with {item!r}")
    if isinstance(item, (int, np.integer)):
        if not -size <= item < size:
            raise IndexError(f"index {item} is out of range for axis {axis} of size {size}")  # IndexError ends iteration, as for sequences
        item = slice(int(item) % size, int(item) % size + 1)
    if not isinstance(item, slice):
        raise TraceError(f"unsupported index {item!r}: use ints, slices, None, ..., integer index arrays or one bool "
                         "mask")
    if any(isinstance(bound, str) for bound in (item.start, item.stop, item.step)):
        raise TraceError(f"cannot slice dim {axis} (size {size}) of {input.type} with the symbolic bound in {item!r}: a "
                         "slice's size must be known when tracing; compile with static shapes (batch_dim=None) or slice "
                         "a tensor whose dim is that symbol")
    start, stop, step = item.indices(size)
    if step < 1:
        raise TraceError(f"slice steps must be positive, got {step}")
    return apply("tensor.slice", input, axis=axis, start=start, stop=max(start, stop), step=step)


@honors_inplace
def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *, seed: Tensor | None = None) -> Tensor:
    """Zero elements with probability ``p`` and scale the rest by ``1/(1-p)``; traces nothing unless training with ``p > 0``.

    The mask comes from ``seed`` (a scalar int64 tensor) or else from the traced graph's ``rng_seed`` input,
    which ``compile_train_step`` feeds with a fresh seed each step.
    """
    if not training or p == 0:
        return input
    from kiln.frontend.trace import TraceContext

    context = TraceContext.current()
    if seed is None:
        seed_value, stream = context.random_seed()
        seed = Tensor(seed_value)
    else:
        stream, context.random_streams = context.random_streams, context.random_streams + 1
    if input.dtype.is_half:  # PyTorch scales by 1 / (1 - p) rounded to the half dtype: a half mask holds that value
        ones = apply("tensor.broadcast_to", apply("tensor.constant", value=np.ones((), input.dtype.numpy)), shape=input.shape)
        return input * apply("nn.dropout", ones, seed, p=p, stream=stream)
    return apply("nn.dropout", input, seed, p=p, stream=stream)


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
