"""VJP rules of convolution, pooling and the transformer composites, in the one ``VJP_RULES`` table.

``conv2d``, ``conv2d_input_grad`` and ``conv2d_weight_grad`` are bilinear and
transpose one another: ``<conv(x, w), g> = <x, input_grad(g, w)> =
<w, weight_grad(x, g)>``, so each rule below is the other two, and
convolutions have derivatives of every order.
"""

from __future__ import annotations

import math

import numpy as np

from kiln.compiler.autodiff.rules import Cotangents, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value
from kiln.compiler.ops.conv import output_size
from kiln.compiler.ops.transformer import GELU_SQUARE_CAP, GELU_TANH_CUBIC, GELU_TANH_LINEAR, batch_axes, gelu_tanh_denominator, per_channel, standardize_grad

CONV_ATTRS = ("stride", "padding", "dilation", "groups")
POOL_ATTRS = ("kernel_size", "stride", "padding")


def _conv_attrs(op: Op) -> dict:
    return {key: op.attrs[key] for key in CONV_ATTRS}


@vjp_rule("tensor.conv2d")
def conv2d_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # y = conv(x, w):  dx = conv^T_w g,  dw = conv^T_x g
    x, w = op.operands
    dx = b.conv2d_input_grad(g, w, input_shape=x.type.shape, **_conv_attrs(op))
    dw = b.conv2d_weight_grad(x, g, weight_shape=w.type.shape, **_conv_attrs(op))
    return dx, dw


@vjp_rule("tensor.conv2d_input_grad")
def conv2d_input_grad_vjp(b: Builder, op: Op, c: Value) -> Cotangents:
    # <c, conv^T_w g> = <conv(c, w), g>:  dg = conv(c, w),  dw = weight_grad(c, g)
    g, w = op.operands
    return b.conv2d(c, w, **_conv_attrs(op)), b.conv2d_weight_grad(c, g, weight_shape=w.type.shape, **_conv_attrs(op))


@vjp_rule("tensor.conv2d_weight_grad")
def conv2d_weight_grad_vjp(b: Builder, op: Op, c: Value) -> Cotangents:
    # <c, weight_grad(x, g)> = <conv(x, c), g>:  dx = input_grad(g, c),  dg = conv(x, c)
    x, g = op.operands
    return b.conv2d_input_grad(g, c, input_shape=x.type.shape, **_conv_attrs(op)), b.conv2d(x, c, **_conv_attrs(op))


@vjp_rule("tensor.conv2d_columns")
def conv2d_columns_vjp(b: Builder, op: Op, c: Value) -> Cotangents:
    # im2col is conv2d with a one-hot weight (output channel (g, k) reads window element k of group g), so its
    # transpose is that weight's input_grad, the columns' cotangent read as an (N, groups K, OH, OW) image
    (x,) = op.operands
    (kh, kw), groups = op.attrs["kernel"], op.attrs["groups"]
    n, channels = x.type.shape[:2]
    k = kh * kw * (channels // groups)
    oh, ow = (output_size(x.type.shape[2 + i], (kh, kw)[i], *(op.attrs[key][i] for key in ("stride", "padding", "dilation")))
              for i in range(2))
    image = b.transpose(b.reshape(c, shape=(groups, n, oh, ow, k)), perm=(1, 0, 4, 2, 3))
    image = b.reshape(image, shape=(n, groups * k, oh, ow))
    one_hot = np.tile(np.eye(k).reshape(k, kh, kw, channels // groups).transpose(0, 3, 1, 2), (groups, 1, 1, 1))
    weight = b.constant(one_hot.astype(x.type.dtype.numpy), x.type.dtype)
    return (b.conv2d_input_grad(image, weight, input_shape=x.type.shape, **_conv_attrs(op)),)


@vjp_rule("tensor.max_pool2d")
def max_pool2d_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # each window's cotangent goes to its (first) largest element
    return (b.max_pool2d_grad(op.operands[0], g, **{key: op.attrs[key] for key in POOL_ATTRS}),)


@vjp_rule("tensor.avg_pool2d")
def avg_pool2d_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    x = op.operands[0]
    return (b.avg_pool2d_grad(g, input_shape=x.type.shape, **{key: op.attrs[key] for key in POOL_ATTRS}),)


@vjp_rule("tensor.avg_pool2d_grad")
def avg_pool2d_grad_vjp(b: Builder, op: Op, c: Value) -> Cotangents:
    # avg_pool2d_grad is avg_pool2d's transpose, so its own transpose is avg_pool2d
    return (b.avg_pool2d(c, **{key: op.attrs[key] for key in POOL_ATTRS}),)


@vjp_rule("nn.gelu")
def gelu_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    x = op.operands[0]
    one, half = b.scalar_like(1.0, x), b.scalar_like(0.5, x)
    if op.attrs["approximate"] == "tanh":
        # d/dx x s(u) = s + x s (1 - s) u',  s = sigmoid(u) = 1 / (1 + exp(-u)),  u' = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        s = b.div(one, gelu_tanh_denominator(b, x))
        # x^2 capped in u' (GELU_SQUARE_CAP): past |x| = 100, s (1 - s) is 0 and x s (1 - s) u' then 0, not 0 * inf
        square = b.minimum(b.mul(x, x), b.scalar_like(GELU_SQUARE_CAP, x))
        du = b.add(b.mul(square, b.scalar_like(3 * GELU_TANH_CUBIC, x)), b.scalar_like(GELU_TANH_LINEAR, x))
        slope = b.add(s, b.mul(b.mul(x, b.mul(s, b.sub(one, s))), du))
    else:
        # d/dx x Phi(x) = Phi(x) + x phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2,  phi(x) = exp(-x^2/2) / sqrt(2 pi)
        cdf = b.mul(half, b.add(one, b.erf(b.mul(x, b.scalar_like(1 / math.sqrt(2), x)))))
        pdf = b.mul(b.scalar_like(1 / math.sqrt(2 * math.pi), x), b.exp(b.mul(b.scalar_like(-0.5, x), b.mul(x, x))))
        slope = b.add(cdf, b.mul(x, pdf))
    return (b.mul(g, slope),)


@vjp_rule("nn.layer_norm")
def layer_norm_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # one op for the whole backward (its decomposition is the math), so a backend may lower it as one row kernel
    x, weight, _ = op.operands
    return tuple(b.op("nn.layer_norm_grad", x, weight, g, eps=op.attrs["eps"]))


@vjp_rule("nn.scaled_dot_product_attention")
def attention_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # one op for the whole backward (its decomposition is the math), so a backend may lower it as a unit
    query, key, value, *mask = op.operands
    grads = b.op("nn.scaled_dot_product_attention_grad", query, key, value, g, *mask, **op.attrs)
    return tuple(grads) + (None,) * len(mask)


@vjp_rule("nn.dropout")
def dropout_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # dropout is x * m with the same mask m, redrawn from the same (seed, stream): dx = g * m
    x, seed = op.operands
    p = op.attrs["p"]
    draw = b.random_uniform(seed, x, dtype=x.type.dtype, stream=op.attrs["stream"])
    keep = b.greater_equal(draw, b.scalar_like(p, draw))
    return b.mul(g, b.where(keep, b.scalar_like(1 / (1 - p), g), b.scalar_like(0.0, g))), None


@vjp_rule("tensor.max_pool2d_grad")
def max_pool2d_grad_vjp(b: Builder, op: Op, c: Value) -> Cotangents:
    # linear in g, piecewise constant in x: dg = c at each window's winner, dx = 0
    x = op.operands[0]
    return None, b.max_pool2d_select(x, c, **{key: op.attrs[key] for key in POOL_ATTRS})


@vjp_rule("tensor.max_pool2d_select")
def max_pool2d_select_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # select is the transpose of max_pool2d_grad in its cotangent
    x = op.operands[0]
    return None, b.max_pool2d_grad(x, g, **{key: op.attrs[key] for key in POOL_ATTRS})


@vjp_rule("nn.batch_norm")
def batch_norm_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # layer norm's backward over the batch axes, the weight per channel
    x, weight, _ = op.operands
    axes = batch_axes(x)
    dx, g_normalized = standardize_grad(b, x, per_channel(b, weight, x), g, axes, op.attrs["eps"])
    return dx, b.reduce_sum(g_normalized, axes=axes), b.reduce_sum(g, axes=axes)
