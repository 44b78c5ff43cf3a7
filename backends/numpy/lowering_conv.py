"""NumPy kernels for convolution and pooling: strided window views and einsum (im2col without the copy).

A window view of the padded input has shape ``(N, C, OH, OW, KH, KW)``; the
gradient kernels scatter back through the same geometry, one kernel offset
``(i, j)`` at a time, so no index arrays are built.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from kiln.backends.numpy.lowering import NUMPY


def _padded(x, padding, value=0.0):
    (ph, pw) = padding
    if not ph and not pw:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _out_size(size: int, kernel: int, stride: int, dilation: int) -> int:
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def windows(xp, kernel, stride, dilation):
    """The ``(N, C, OH, OW, KH, KW)`` view of every window of the (already padded) ``xp``."""
    n, c, h, w = xp.shape
    oh, ow = (_out_size(s, k, st, d) for s, k, st, d in zip((h, w), kernel, stride, dilation))
    sn, sc, sh, sw = xp.strides
    shape = (n, c, oh, ow) + tuple(kernel)
    strides = (sn, sc, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1])
    return as_strided(xp, shape, strides, writeable=False)


def _grouped(a, groups: int, axis: int):
    """Split channel ``axis`` into ``(groups, channels/groups)``."""
    return a.reshape(a.shape[:axis] + (groups, a.shape[axis] // groups) + a.shape[axis + 1 :])


@NUMPY.register("tensor.conv2d")
def conv2d(x, weight, *, stride, padding, dilation, groups: int):
    # y[n,g,o,h,w] = sum_{c,i,j} window[n,g,c,h,w,i,j] weight[g,o,c,i,j]
    cols = _grouped(windows(_padded(x, padding), weight.shape[2:], stride, dilation), groups, 1)
    out = np.einsum("ngchwij,gocij->ngohw", cols, _grouped(weight, groups, 0), optimize=True)
    return np.ascontiguousarray(out.reshape((x.shape[0], weight.shape[0]) + out.shape[3:]), dtype=x.dtype)


def _scatter_windows(per_offset, padded_shape, kernel, stride, dilation, padding, dtype):
    """Sum ``per_offset(i, j)`` (shape ``(N, C, OH, OW)``) into the padded input at each kernel offset, then crop."""
    out = np.zeros(padded_shape, dtype=dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            part = per_offset(i, j)
            rows = slice(i * dilation[0], i * dilation[0] + stride[0] * (part.shape[2] - 1) + 1, stride[0])
            cols = slice(j * dilation[1], j * dilation[1] + stride[1] * (part.shape[3] - 1) + 1, stride[1])
            out[:, :, rows, cols] += part
    (ph, pw) = padding
    return out[:, :, ph : padded_shape[2] - ph, pw : padded_shape[3] - pw]


@NUMPY.register("tensor.conv2d_input_grad")
def conv2d_input_grad(g, weight, *, input_shape, stride, padding, dilation, groups: int):
    # dx[n,g,c] at offset (i,j) += sum_o g[n,g,o] w[g,o,c,i,j]
    n, c, h, w = input_shape
    grads = _grouped(g, groups, 1)
    kernels = _grouped(weight, groups, 0)
    padded_shape = (n, c, h + 2 * padding[0], w + 2 * padding[1])

    def per_offset(i, j):
        part = np.einsum("ngohw,goc->ngchw", grads, kernels[..., i, j], optimize=True)
        return part.reshape((n, c) + part.shape[3:])

    return np.ascontiguousarray(_scatter_windows(per_offset, padded_shape, weight.shape[2:], stride, dilation, padding, g.dtype))


@NUMPY.register("tensor.conv2d_weight_grad")
def conv2d_weight_grad(x, g, *, weight_shape, stride, padding, dilation, groups: int):
    # dw[g,o,c,i,j] = sum_{n,h,w} window[n,g,c,h,w,i,j] g[n,g,o,h,w]
    cols = _grouped(windows(_padded(x, padding), weight_shape[2:], stride, dilation), groups, 1)
    out = np.einsum("ngchwij,ngohw->gocij", cols, _grouped(g, groups, 1), optimize=True)
    return np.ascontiguousarray(out.reshape(weight_shape), dtype=x.dtype)


@NUMPY.register("tensor.max_pool2d")
def max_pool2d(x, *, kernel_size, stride, padding):
    return windows(_padded(x, padding, -np.inf), kernel_size, stride, (1, 1)).max(axis=(4, 5))


@NUMPY.register("tensor.max_pool2d_grad")
def max_pool2d_grad(x, g, *, kernel_size, stride, padding):
    # the first largest element of each window (row-major) takes the window's cotangent, as PyTorch
    xp = _padded(x, padding, -np.inf)
    winner = _winners(x, kernel_size, stride, padding)
    per_offset = lambda i, j: np.where(winner == i * kernel_size[1] + j, g, 0).astype(g.dtype)  # noqa: E731
    return np.ascontiguousarray(_scatter_windows(per_offset, xp.shape, kernel_size, stride, (1, 1), padding, g.dtype))


def _winners(x, kernel_size, stride, padding):
    """Per window, the flat index ``i * KW + j`` of its first largest element (row-major), as PyTorch."""
    view = windows(_padded(x, padding, -np.inf), kernel_size, stride, (1, 1))
    return view.reshape(view.shape[:4] + (-1,)).argmax(axis=4)


@NUMPY.register("tensor.max_pool2d_select")
def max_pool2d_select(x, c, *, kernel_size, stride, padding):
    view = windows(_padded(c, padding), kernel_size, stride, (1, 1))
    flat = view.reshape(view.shape[:4] + (-1,))
    return np.take_along_axis(flat, _winners(x, kernel_size, stride, padding)[..., None], axis=4)[..., 0]


@NUMPY.register("tensor.avg_pool2d")
def avg_pool2d(x, *, kernel_size, stride, padding):
    return windows(_padded(x, padding), kernel_size, stride, (1, 1)).mean(axis=(4, 5), dtype=x.dtype)


@NUMPY.register("tensor.avg_pool2d_grad")
def avg_pool2d_grad(g, *, input_shape, kernel_size, stride, padding):
    n, c, h, w = input_shape
    share = g / g.dtype.type(kernel_size[0] * kernel_size[1])
    padded_shape = (n, c, h + 2 * padding[0], w + 2 * padding[1])
    return np.ascontiguousarray(_scatter_windows(lambda i, j: share, padded_shape, kernel_size, stride, (1, 1), padding, g.dtype))
