"""``nn`` composites for transformers: gelu, layer_norm, scaled dot-product attention (layer norm's and attention's
backward each as one op), the masked softmax of its weights.

Each has a decomposition into ``tensor`` primitives; the NumPy backend lowers
gelu and layer_norm directly, and autodiff uses direct VJP rules for them. The
CuPy backend runs the masked softmax as one row kernel.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType, broadcast_shapes, format_shape
from kiln.compiler.ops.registry import register_decomposition, register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value

GELU_APPROXIMATIONS = ("none", "tanh")
MASKED_SCORE = -1e9
"""What a masked attention score becomes: exp underflows to 0 in f32 and f64, and a fully masked row stays finite."""


@register_op("nn.gelu", traits={"composite", "elementwise"}, approximate="none")
def gelu_shape(x: TensorType, *, approximate: str) -> TensorType:
    if approximate not in GELU_APPROXIMATIONS:
        raise ShapeError(f"nn.gelu: approximate must be one of {GELU_APPROXIMATIONS}, got {approximate!r}")
    if not x.dtype.is_float:
        raise ShapeError(f"nn.gelu needs a floating-point operand, got {x}")
    return x


@register_decomposition("nn.gelu")
def gelu_decomposition(b: "Builder", x: "Value", *, approximate: str) -> "Value":
    if approximate == "tanh":
        # gelu(x) ~ x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x / (1 + exp(-u))
        return b.div(x, gelu_tanh_denominator(b, x))
    # gelu(x) = x/2 (1 + erf(x / sqrt 2))
    inner = b.erf(b.mul(x, b.scalar_like(1 / math.sqrt(2), x)))
    return b.mul(b.mul(x, b.scalar_like(0.5, x)), b.add(b.scalar_like(1.0, x), inner))


GELU_TANH_LINEAR = 2 * math.sqrt(2 / math.pi)
GELU_TANH_CUBIC = GELU_TANH_LINEAR * 0.044715
GELU_SQUARE_CAP = 1e4
"""``x^2`` is capped here in the tanh GELU's slope ``u'``: unchanged wherever ``sigmoid(u) (1 - sigmoid(u))`` is not 0
(``|x| < 25`` in float64), and finite beyond, so that 0 times it is 0 (the slope 1 or 0) and not NaN."""


def gelu_tanh_denominator(b: "Builder", x: "Value") -> "Value":
    """``1 + exp(-u)``, ``u = 2 sqrt(2/pi) (x + 0.044715 x^3)``: since ``(1 + tanh(u/2)) / 2 = sigmoid(u)``, the tanh
    GELU is ``x`` over it (one exp instead of a tanh, 2x cheaper in NumPy). The VJP rule builds the same ops, so CSE
    shares them between the forward and the gradient. ``exp`` overflows to inf on purpose below about -10 (float32):
    the quotient is then -0 for every finite ``x``, as PyTorch's (a cap on ``-u`` gave ``x e^-cap``, -1.8e-5 at -1e30)."""
    minus_u = b.mul(x, b.add(b.mul(b.mul(x, x), b.scalar_like(-GELU_TANH_CUBIC, x)), b.scalar_like(-GELU_TANH_LINEAR, x)))
    return b.add(b.scalar_like(1.0, x), b.exp(minus_u))


@register_op("nn.layer_norm", traits={"composite"}, eps=1e-5)
def layer_norm_shape(x: TensorType, weight: TensorType, bias: TensorType, *, eps: float) -> TensorType:
    """Normalize over the trailing ``weight.rank`` axes, then scale by ``weight`` and shift by ``bias``."""
    normalized = x.shape[x.rank - weight.rank :] if weight.rank <= x.rank else None
    if weight.rank == 0 or normalized != weight.shape or bias.shape != weight.shape or not x.dtype.is_float:
        raise ShapeError(
            f"nn.layer_norm needs float x whose trailing dims equal weight's and bias's; "
            f"got x {x}, weight {format_shape(weight.shape)}, bias {format_shape(bias.shape)}"
        )
    if weight.dtype != x.dtype or bias.dtype != x.dtype:
        raise ShapeError(f"nn.layer_norm needs x, weight and bias of one dtype, got {x}, {weight}, {bias}")
    return x


def normalized_axes(x: "Value", weight: "Value") -> tuple[int, ...]:
    return tuple(range(x.type.rank - weight.type.rank, x.type.rank))


def standardize(b: "Builder", x: "Value", axes: tuple[int, ...], eps: float) -> tuple["Value", "Value"]:
    """``((x - mean) / sqrt(var + eps), 1 / sqrt(var + eps))`` over ``axes``, biased variance."""
    centered = b.sub(x, b.reduce_mean(x, axes=axes, keepdims=True))
    variance = b.reduce_mean(b.mul(centered, centered), axes=axes, keepdims=True)
    inverse_std = b.rsqrt(b.add(variance, b.scalar_like(eps, x)))
    return b.mul(centered, inverse_std), inverse_std


@register_decomposition("nn.layer_norm")
def layer_norm_decomposition(b: "Builder", x: "Value", weight: "Value", bias: "Value", *, eps: float) -> "Value":
    # y = (x - mean) / sqrt(var + eps) * weight + bias
    normalized, _ = standardize(b, x, normalized_axes(x, weight), eps)
    return b.add(b.mul(normalized, weight), bias)


@register_op("nn.layer_norm_grad", traits={"composite"}, eps=1e-5)
def layer_norm_grad_shape(x: TensorType, weight: TensorType, cotangent: TensorType, *, eps: float) -> tuple[TensorType, TensorType, TensorType]:
    """``(dx, dweight, dbias)`` of ``nn.layer_norm`` for the cotangent of its output, the parameters' summed over the
    leading axes (one op, so a backend can lower the backward as one row kernel)."""
    layer_norm_shape(x, weight, weight, eps=eps)
    if cotangent != x:
        raise ShapeError(f"nn.layer_norm_grad: the cotangent must have x's type {x}, got {cotangent}")
    return x, weight, weight


@register_decomposition("nn.layer_norm_grad")
def layer_norm_grad_decomposition(b: "Builder", x: "Value", weight: "Value", g: "Value", *, eps: float) -> tuple["Value", "Value", "Value"]:
    dx, g_normalized = standardize_grad(b, x, weight, g, normalized_axes(x, weight), eps)
    leading = tuple(range(x.type.rank - weight.type.rank))
    if not leading:
        return dx, g_normalized, g
    return dx, b.reduce_sum(g_normalized, axes=leading), b.reduce_sum(g, axes=leading)


def standardize_grad(b: "Builder", x: "Value", weight: "Value", g: "Value", axes: tuple[int, ...], eps: float) -> tuple["Value", "Value"]:
    """``(dx, g * xh)`` for ``y = xh * weight + bias``, ``xh = standardize(x)`` over ``axes`` (weight broadcast to x):
    ``dx = r (dxh - mean(dxh) - xh mean(dxh xh))``, ``dxh = g w``; weight's and bias's gradients are ``g xh`` and ``g``
    summed over the other axes."""
    normalized, inverse_std = standardize(b, x, axes, eps)
    d_normalized = b.mul(g, weight)
    mean_d = b.reduce_mean(d_normalized, axes=axes, keepdims=True)
    mean_dx = b.reduce_mean(b.mul(d_normalized, normalized), axes=axes, keepdims=True)
    return b.mul(inverse_std, b.sub(b.sub(d_normalized, mean_d), b.mul(normalized, mean_dx))), b.mul(g, normalized)


@register_op("nn.scaled_dot_product_attention", traits={"composite"}, causal=False, scale=None)
def attention_shape(query: TensorType, key: TensorType, value: TensorType, *mask: TensorType, causal: bool, scale: float | None) -> TensorType:
    """``softmax(q k^T * scale + mask) v`` over ``(..., L, E)`` queries and ``(..., S, E)`` keys; an optional bool mask (True = attend) broadcasts to ``(..., L, S)``."""
    if query.rank < 2 or key.rank < 2 or value.rank < 2 or query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ShapeError(f"nn.scaled_dot_product_attention needs q (..., L, E), k (..., S, E), v (..., S, Ev); got {query}, {key}, {value}")
    if len(mask) > 1 or (mask and mask[0].dtype is not DType.bool):
        raise ShapeError(f"nn.scaled_dot_product_attention takes at most one bool mask, got {', '.join(map(str, mask))}")
    if causal and (isinstance(query.shape[-2], str) or isinstance(key.shape[-2], str)):
        raise ShapeError(f"nn.scaled_dot_product_attention: a causal mask needs static sequence lengths, got {query} and {key}")
    return query.with_shape(query.shape[:-1] + value.shape[-1:])


@register_decomposition("nn.scaled_dot_product_attention")
def attention_decomposition(b: "Builder", query: "Value", key: "Value", value: "Value", *mask: "Value", causal: bool, scale: float | None) -> "Value":
    # attention = softmax(q k^T / sqrt(E), masked where not attended) v
    return b.matmul(attention_weights(b, query, key, mask, causal, scale), value)


@register_op("nn.scaled_dot_product_attention_grad", traits={"composite"}, causal=False, scale=None)
def attention_grad_shape(query: TensorType, key: TensorType, value: TensorType, cotangent: TensorType, *mask: TensorType,
                         causal: bool, scale: float | None) -> tuple[TensorType, TensorType, TensorType]:
    """``(dq, dk, dv)`` of ``nn.scaled_dot_product_attention`` for the cotangent of its output (one op, so a backend can
    lower the attention's backward as a unit)."""
    output = attention_shape(query, key, value, *mask, causal=causal, scale=scale)
    if cotangent != output:
        raise ShapeError(f"nn.scaled_dot_product_attention_grad: the cotangent must have the output's type {output}, got {cotangent}")
    return query, key, value


@register_decomposition("nn.scaled_dot_product_attention_grad")
def attention_grad_decomposition(b: "Builder", query: "Value", key: "Value", value: "Value", g: "Value", *mask: "Value",
                                 causal: bool, scale: float | None) -> tuple["Value", "Value", "Value"]:
    # o = P v, P = softmax(S), S = q k^T c:  dv = P^T g,  dS = softmax_grad(P, g v^T),  dq = (dS k) c,  dk = (dS^T q) c
    # (c scales the (L, E) products, not the (L, S) scores)
    from kiln.compiler.autodiff.differentiate import unbroadcast

    weights = attention_weights(b, query, key, mask, causal, scale)
    d_scores = b.softmax_grad(weights, b.matmul(g, swap_last(b, value)), axis=-1)
    c = b.scalar_like(attention_scale(query, scale), g)
    grads = b.mul(b.matmul(d_scores, key), c), b.mul(b.matmul(swap_last(b, d_scores), query), c), b.matmul(swap_last(b, weights), g)
    return tuple(unbroadcast(b, grad, operand.type) for grad, operand in zip(grads, (query, key, value)))


def swap_last(b: "Builder", x: "Value") -> "Value":
    """``x`` with its last two axes swapped."""
    return b.transpose(x, perm=tuple(range(x.type.rank - 2)) + (x.type.rank - 1, x.type.rank - 2))


def attention_weights(b: "Builder", query: "Value", key: "Value", mask: tuple["Value", ...], causal: bool, scale: float | None) -> "Value":
    """``softmax(where(keep, (q scale) k^T, -1e9))`` over the keys: ``(..., L, S)`` (the scale on the ``(L, E)`` queries,
    not the ``(L, S)`` scores)."""
    scores = b.matmul(b.mul(query, b.scalar_like(attention_scale(query, scale), query)), swap_last(b, key))
    masks = list(mask) + ([causal_mask(b, query.type.shape[-2], key.type.shape[-2])] if causal else [])
    if not masks:
        return b.softmax(scores, axis=-1)
    for keep in masks[:-1]:
        scores = b.where(keep, scores, b.scalar_like(MASKED_SCORE, scores))
    return b.masked_softmax(scores, masks[-1])


@register_op("nn.masked_softmax", traits={"composite"})
def masked_softmax_shape(x: TensorType, keep: TensorType) -> TensorType:
    """``softmax(where(keep, x, -1e9))`` over the last axis: attention weights with masked keys (``keep`` False)."""
    if not x.dtype.is_float or keep.dtype is not DType.bool or keep.rank > x.rank:
        raise ShapeError(f"nn.masked_softmax needs float scores and a bool mask of at most their rank, got {x} and {keep}")
    if broadcast_shapes(x.shape, keep.shape) != x.shape:
        raise ShapeError(f"nn.masked_softmax: the mask {keep} does not broadcast to the scores {x}")
    return x


@register_decomposition("nn.masked_softmax")
def masked_softmax_decomposition(b: "Builder", x: "Value", keep: "Value") -> "Value":
    return b.softmax(b.where(keep, x, b.scalar_like(MASKED_SCORE, x)), axis=-1)


def attention_scale(query: "Value", scale: float | None) -> float:
    return scale if scale is not None else 1 / math.sqrt(query.type.shape[-1])


def causal_mask(b: "Builder", queries: int, keys: int) -> "Value":
    """``(L, S)`` bool, True where key ``j <= i``: PyTorch's ``is_causal`` (top-left aligned)."""
    return b.constant(np.tril(np.ones((queries, keys), dtype=bool)))


@register_op("nn.batch_norm", traits={"composite"}, eps=1e-5)
def batch_norm_shape(x: TensorType, weight: TensorType, bias: TensorType, *, eps: float) -> TensorType:
    """Training-mode batch norm: normalize each channel (axis 1) over every other axis with the batch's own statistics."""
    if x.rank < 2 or not x.dtype.is_float or weight.shape != (x.shape[1],) or bias.shape != weight.shape:
        raise ShapeError(f"nn.batch_norm needs float x (N, C, ...) and weight, bias of shape (C,); got x {x}, weight {weight}, bias {bias}")
    if weight.dtype != x.dtype or bias.dtype != x.dtype:
        raise ShapeError(f"nn.batch_norm needs x, weight and bias of one dtype, got {x}, {weight}, {bias}")
    return x


def batch_axes(x: "Value") -> tuple[int, ...]:
    """Every axis but the channel axis 1."""
    return (0,) + tuple(range(2, x.type.rank))


def per_channel(b: "Builder", v: "Value", x: "Value") -> "Value":
    """A ``(C,)`` vector reshaped to ``(C, 1, ...)`` so it broadcasts along axis 1 of ``x``."""
    return b.reshape(v, shape=v.type.shape + (1,) * (x.type.rank - 2))


@register_decomposition("nn.batch_norm")
def batch_norm_decomposition(b: "Builder", x: "Value", weight: "Value", bias: "Value", *, eps: float) -> "Value":
    # y = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c, statistics over (N, H, W), biased variance
    normalized, _ = standardize(b, x, batch_axes(x), eps)
    return b.add(b.mul(normalized, per_channel(b, weight, x)), per_channel(b, bias, x))
