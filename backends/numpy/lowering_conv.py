"""NumPy kernels for convolution and pooling: im2col in channels-last order and one GEMM; pooling by kernel offset.

A convolution copies the padded input once into channels-last columns
``(N, OH, OW, KH, KW, C)`` (each copy's inner run is the ``C`` contiguous
channels; a channels-first im2col or einsum over a 6-D window view copied the
same data 5-6x slower at a CNN's small spatial sizes), then multiplies them
with the weight as one GEMM per group; with one input channel per group the
columns are copied per kernel offset instead, in runs of an output row. The
input gradient at stride 1 is itself a convolution (of the padded cotangent
with the turned weight); at larger strides it is the transposed GEMM, its
columns added back at each kernel offset. Pooling and the gradients' scatter go one kernel offset ``(i, j)`` at a
time over strided views of the ``(N, C, OH, OW)`` outputs, so no index arrays
are built; windows that tile the input (a 2x2 pool) are first copied into one
contiguous plane per offset (``_offset_planes``), so that work runs on
contiguous arrays.

```python
planes = _offset_planes(x, (2, 2))        # (2, 2, N C OH OW): planes[i, j] = x[:, :, i::2, j::2]
pooled = np.maximum.reduce(planes.reshape(4, -1)).reshape(n, c, h // 2, w // 2)
```
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from kiln.backends.base import is_host_array
from kiln.backends.numpy.lowering import NUMPY


def _padded(x, padding, value=0.0):
    (ph, pw) = padding
    if not ph and not pw:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _out_size(size: int, kernel: int, stride: int, dilation: int) -> int:
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def _window_slice(offset: int, dilation: int, stride: int, count: int) -> slice:
    """The rows (or columns) of the padded input that kernel offset ``offset`` reads for ``count`` outputs."""
    return slice(offset * dilation, offset * dilation + stride * (count - 1) + 1, stride)


def _offset_views(xp, kernel, stride, dilation, out_hw):
    """``((i, j), view)`` for each kernel offset: the ``(N, C, OH, OW)`` elements of the padded ``xp`` it reads."""
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, cols = _window_slice(i, dilation[0], stride[0], out_hw[0]), _window_slice(j, dilation[1], stride[1], out_hw[1])
            yield (i, j), xp[:, :, rows, cols]


# Convolution: channels-last columns, one GEMM per group.


def _channels_last_padded(x, padding):
    """``(N, H + 2 ph, W + 2 pw, C)``, contiguous, zero borders."""
    n, c, h, w = x.shape
    (ph, pw) = padding
    out = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)
    out[:, ph : ph + h, pw : pw + w] = x.transpose(0, 2, 3, 1)
    return out


def _columns(x, kernel, stride, dilation, padding, groups: int):
    """``(groups, N OH OW, KH KW C/groups)``: each output position's window, channels last; and ``(OH, OW)``."""
    if x.shape[1] == groups:
        return _offset_major_columns(x, kernel, stride, dilation, padding)
    xh = _channels_last_padded(x, padding)
    n, h, w, c = xh.shape
    oh, ow = (_out_size(size, k, st, d) for size, k, st, d in zip((h, w), kernel, stride, dilation))
    sn, sh, sw, sc = xh.strides
    shape = (groups, n, oh, ow) + tuple(kernel) + (c // groups,)
    strides = (sc * (c // groups), sn, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1], sc)
    view = as_strided(xh, shape, strides)  # read only (no writeable=: CuPy's as_strided does not take it)
    return np.ascontiguousarray(view).reshape(groups, n * oh * ow, -1), (oh, ow)


def _offset_major_columns(x, kernel, stride, dilation, padding):
    """``_columns`` for one input channel per group (a first layer on grey images, a depthwise convolution), where
    channels-last runs are one element long: ``(groups, KH KW, N OH OW)`` copied one kernel offset at a time in
    runs of an output row (3.4x faster for W5's 8x8 first layer), returned as its transposed view (BLAS reads
    either order)."""
    n, c, h, w = x.shape
    out_hw = tuple(_out_size(size + 2 * p, k, st, d) for size, p, k, st, d in zip((h, w), padding, kernel, stride, dilation))
    padded = np.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]), dtype=x.dtype)  # np.pad costs ~40 us more
    padded[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w] = x
    out = np.empty((c, kernel[0] * kernel[1], n) + out_hw, dtype=x.dtype)
    for (i, j), view in _offset_views(padded, kernel, stride, dilation, out_hw):
        out[:, i * kernel[1] + j] = view.transpose(1, 0, 2, 3)
    return out.reshape(c, kernel[0] * kernel[1], -1).transpose(0, 2, 1), out_hw


def _weight_matrices(weight, groups: int):
    """``(groups, KH KW C/groups, O/groups)`` of an ``(O, C/groups, KH, KW)`` weight, rows in the columns' order."""
    o, c, kh, kw = weight.shape
    grouped = weight.reshape(groups, o // groups, c, kh, kw).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(grouped).reshape(groups, kh * kw * c, o // groups)


def _channel_rows(g, groups: int):
    """``(groups, O/groups, N OH OW)`` of an ``(N, O, OH, OW)`` array: a copy whose inner runs are whole
    ``OH OW`` planes (channels-last rows would copy one element at a time); GEMMs read it transposed where needed."""
    n, o, oh, ow = g.shape
    return np.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(groups, o // groups, n * oh * ow)


@NUMPY.register("tensor.conv2d_columns")
def conv2d_columns(x, *, kernel, stride, padding, dilation, groups: int):
    return _columns(x, kernel, stride, dilation, padding, groups)[0]


@NUMPY.register("tensor.conv2d")
def conv2d(x, weight, *, stride, padding, dilation, groups: int):
    # y[n, o, h, w] = sum_k cols[n h w, k] W[o, k], per group: (N OH OW, K) @ (K, O/g), then back to NCHW. OpenBLAS
    # runs this orientation faster than (O/g, K) @ (K, N OH OW) at a CNN's few channels and long N OH OW (W5's
    # input gradient 1163 -> 773 us, the transposing copy included; no shape measured slower)
    cols, (oh, ow) = _columns(x, weight.shape[2:], stride, dilation, padding, groups)
    n, o = x.shape[0], weight.shape[0]
    out = np.matmul(cols, _weight_matrices(weight, groups))  # (groups, N OH OW, O/groups)
    out = out.reshape(groups, n, oh, ow, o // groups).transpose(1, 0, 4, 2, 3).reshape(n, o, oh, ow)
    return np.ascontiguousarray(out, dtype=x.dtype)


def _transposed_weight(weight, groups: int):
    """``(C, O/groups, KH, KW)``: per group, the in and out channels swapped and the kernel turned 180 degrees."""
    o, c, kh, kw = weight.shape
    swapped = weight.reshape(groups, o // groups, c, kh, kw).transpose(0, 2, 1, 3, 4).reshape(c * groups, o // groups, kh, kw)
    return np.ascontiguousarray(swapped[:, :, ::-1, ::-1])


def _full_padding(weight, padding, dilation) -> tuple[int, int]:
    """The padding that makes a stride-1 convolution of the cotangent with ``_transposed_weight`` the input gradient."""
    return tuple(d * (k - 1) - p for k, p, d in zip(weight.shape[2:], padding, dilation))


@NUMPY.register("tensor.conv2d_input_grad")
def conv2d_input_grad(g, weight, *, input_shape, stride, padding, dilation, groups: int):
    # stride 1: dx[n, c, y, x] = sum g[n, o, y + p - i d, x + p - j d] W[o, c, i, j], a convolution of g padded by
    # d (k - 1) - p with the turned weight: one GEMM over g's channels-last columns (W5: 2x the scatter's speed)
    full = _full_padding(weight, padding, dilation)
    if tuple(stride) == (1, 1) and min(full) >= 0:
        return conv2d(g, _transposed_weight(weight, groups), stride=(1, 1), padding=full, dilation=dilation, groups=groups)
    return _scattered_input_grad(g, weight, input_shape=input_shape, stride=stride, padding=padding, dilation=dilation,
                                 groups=groups)


def _scattered_input_grad(g, weight, *, input_shape, stride, padding, dilation, groups: int):
    # dcols = g W_k^T per group and kernel offset k, offsets outermost: each offset's (N, OH, OW, C/g) block is
    # contiguous, added back where the forward read it in runs of OW C/g (the GEMM's own (KH, KW, C) order left
    # runs of C/g, and the adds took twice the GEMM's time)
    n, c, h, w = input_shape
    o, (kh, kw), (oh, ow) = weight.shape[0], weight.shape[2:], g.shape[2:]
    offsets = weight.reshape(groups, o // groups, c // groups, kh * kw).transpose(0, 3, 1, 2)  # (groups, KH KW, O/g, C/g)
    dcols = np.matmul(_channel_rows(g, groups).transpose(0, 2, 1)[:, None], offsets)  # (groups, KH KW, N OH OW, C/g)
    dcols = dcols.reshape(groups, kh, kw, n, oh, ow, c // groups)
    out = np.zeros((n, h + 2 * padding[0], w + 2 * padding[1], groups, c // groups), dtype=g.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _window_slice(i, dilation[0], stride[0], oh), _window_slice(j, dilation[1], stride[1], ow)
            out[:, rows, cols] += dcols[:, i, j].transpose(1, 2, 3, 0, 4)
    out = out[:, padding[0] : padding[0] + h, padding[1] : padding[1] + w].reshape(n, h, w, c)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


@NUMPY.register("tensor.conv2d_weight_grad")
def conv2d_weight_grad(x, g, *, weight_shape, stride, padding, dilation, groups: int):
    # dW[o, k] = sum_{n h w} g[o, n h w] cols[n h w, k], per group: (O/g, N OH OW) @ (N OH OW, K)
    o, c, kh, kw = weight_shape
    cols, _ = _columns(x, (kh, kw), stride, dilation, padding, groups)
    out = np.matmul(_channel_rows(g, groups), cols)  # (groups, O/groups, KH KW C/groups)
    return np.ascontiguousarray(out.reshape(o, kh, kw, c).transpose(0, 3, 1, 2), dtype=x.dtype)


# Pooling: one strided view per kernel offset.


def _pool_views(x, kernel_size, stride, padding, fill=0.0):
    """Each kernel offset's ``(N, C, OH, OW)`` view of ``x`` padded with ``fill``: the pools' ``_offset_views``."""
    out_hw = tuple(_out_size(size + 2 * p, k, s, 1) for size, k, s, p in zip(x.shape[2:], kernel_size, stride, padding))
    return _offset_views(_padded(x, padding, fill), kernel_size, stride, (1, 1), out_hw)


def _padded_shape(shape, padding) -> tuple[int, int, int, int]:
    n, c, h, w = shape
    return n, c, h + 2 * padding[0], w + 2 * padding[1]


def _scatter_windows(per_offset, g, padded_shape, kernel, stride, padding):
    """Sum ``per_offset(i, j)`` (shaped like the pool's output ``g``) into the padded input at each kernel offset,
    then crop."""
    out = np.zeros(padded_shape, dtype=g.dtype)
    disjoint = tuple(kernel) == tuple(stride)  # windows that tile: each element is written once, no sum needed
    for (i, j), view in _offset_views(out, kernel, stride, (1, 1), g.shape[2:]):
        if disjoint:
            view[...] = per_offset(i, j)
        else:
            view += per_offset(i, j)
    (ph, pw) = padding
    return np.ascontiguousarray(out[:, :, ph : padded_shape[2] - ph, pw : padded_shape[3] - pw])


# Windows that tile the input (kernel == stride, no padding, as a CNN's 2x2 pooling): each kernel offset's elements
# of every window are first copied into one contiguous plane, so the maximum, the winners and the gradient's masks run
# over contiguous arrays instead of strided views with 2-4 element rows (5-20x slower per element).


def _tiles(x, kernel_size, stride, padding) -> bool:
    """Windows that cover a contiguous ``x`` exactly once: kernel == stride, no padding, sides divisible by the kernel."""
    (kh, kw), (h, w) = kernel_size, x.shape[2:]
    return tuple(kernel_size) == tuple(stride) and not any(padding) and h % kh == 0 and w % kw == 0 and x.flags.c_contiguous


def _runs(a, width: int):
    """A contiguous ``a`` as ``(a.size // width, words)``: each run of ``width`` elements as one or a few wide words
    (one 8- or 16-byte word for a 2 or 4 wide float32 row), so a copy moves a whole run per step (a view)."""
    nbytes = width * a.itemsize
    word = next(size for size in (16, 8, 4, 2, 1) if nbytes % size == 0)
    words = a.reshape(-1).view(np.complex128 if word == 16 else np.dtype(f"u{word}"))
    return words.reshape(a.size // width, nbytes // word)


def _offset_planes(x, kernel):
    """``(KH, KW, N C OH OW)``, contiguous: plane ``(i, j)`` holds every window's element at kernel offset ``(i, j)``.
    Copied per offset, first the column offsets apart (strided runs of one element), then the row offsets (runs of
    one ``OW``-wide row, moved as wide words: ``_runs``); one transposing copy for all offsets was 2-7x slower."""
    n, c, h, w = x.shape
    (kh, kw), ow = kernel, w // kernel[1]
    columns, elements = np.empty((kw, x.size // kw), dtype=x.dtype), x.reshape(-1, kw)
    for j in range(kw):
        columns[j] = elements[:, j]  # (KW, N C H OW)
    planes = np.empty((kh, kw, x.size // (kh * kw)), dtype=x.dtype)
    rows, words = _runs(columns, ow), _runs(planes, ow)
    rows, words = rows.reshape(kw, -1, kh, rows.shape[1]), words.reshape(kh, kw, -1, words.shape[1])
    for i in range(kh):
        words[i] = rows[:, :, i]
    return planes


def _from_offset_planes(planes, shape, kernel):
    """The ``(N, C, H, W)`` array whose ``_offset_planes`` are ``planes``: the two copies undone."""
    (kh, kw), ow = kernel, shape[3] // kernel[1]
    columns = np.empty((kw, planes.size // kw), dtype=planes.dtype)
    rows, words = _runs(columns, ow), _runs(planes, ow)
    rows, words = rows.reshape(kw, -1, kh, rows.shape[1]), words.reshape(kh, kw, -1, words.shape[1])
    for i in range(kh):
        rows[:, :, i] = words[i]
    out = np.empty(shape, dtype=planes.dtype)
    elements = out.reshape(-1, kw)
    for j in range(kw):
        elements[:, j] = columns[j]
    return out


def _plane_views(x, kernel):
    """``((i, j), plane)`` for each kernel offset, as ``_offset_views`` gives for windows that tile ``x``."""
    planes = _offset_planes(x, kernel)
    return (((i, j), planes[i, j]) for i in range(kernel[0]) for j in range(kernel[1]))


def _pooled_offsets(x, kernel_size, stride, padding, fill):
    """Each kernel offset's elements of every window, as contiguous planes where the windows tile ``x``, else as
    ``_pool_views``; and the pool's output shape."""
    if _tiles(x, kernel_size, stride, padding):
        n, c, h, w = x.shape
        return _plane_views(x, kernel_size), (n, c, h // kernel_size[0], w // kernel_size[1])
    views = _pool_views(x, kernel_size, stride, padding, fill)
    (offset, first) = next(views)
    return itertools.chain([(offset, first)], views), first.shape


@NUMPY.register("tensor.max_pool2d")
def max_pool2d(x, *, kernel_size, stride, padding):
    # the largest of each window (NaN if it holds one), an elementwise maximum over the kernel offsets
    views, shape = _pooled_offsets(x, kernel_size, stride, padding, -np.inf)
    out = np.array(next(views)[1])
    for _, view in views:
        np.maximum(out, view, out=out)
    return out.reshape(shape)


def _winners(x, kernel_size, stride, padding):
    """Per window, the flat index ``i * KW + j`` of the element PyTorch's CPU kernel picks: the first largest
    (row-major), but the last NaN of a window holding one, and for a window of -inf only its first element inside the
    input (the padding never wins). The first largest is the last offset that changed the running maximum while it
    was no NaN; the other two are fixed up after, only where they occur. Each offset's strided view is read once, by
    the maximum; the rest runs on contiguous arrays (strided reads cost ~10x more at a CNN's 2-4 wide rows; a masked
    ``copyto`` per offset was 4x slower)."""
    views, shape = _pooled_offsets(x, kernel_size, stride, padding, -np.inf)
    best = np.array(next(views)[1])
    previous, winner = np.empty_like(best), np.zeros(best.shape, dtype=np.int32)
    better, settled, index = np.empty(best.shape, dtype=bool), np.empty(best.shape, dtype=bool), np.empty(best.shape, dtype=np.int32)
    for (i, j), view in views:
        best, previous = previous, best
        np.maximum(previous, view, out=best)  # NaN once either is: the best stays the first NaN's
        # beat the best: the maximum moved (a NaN moves it too), and the best was no NaN yet (NaN != NaN)
        np.logical_and(np.not_equal(best, previous, out=better), np.equal(previous, previous, out=settled), out=better)
        np.maximum(winner, np.multiply(better, i * kernel_size[1] + j, out=index), out=winner)
    winner, best = winner.reshape(shape), best.reshape(shape)
    on_host = is_host_array(best)  # on a device, asking whether a fix-up is needed would make the host wait: do it
    if any(padding) and (not on_host or (best == -np.inf).any()):
        winner = np.where(best == -np.inf, _first_inside(shape, kernel_size, stride, padding), winner)
    if not on_host or np.isnan(best).any():
        winner = _last_nan(x, winner, kernel_size, stride, padding)
    return winner


def _first_inside(shape, kernel_size, stride, padding):
    """``(OH, OW)``: each window's first offset ``i * KW + j`` inside the input, PyTorch's pick for a window of -inf."""
    first = [np.maximum(0, p - np.arange(count) * s) for count, s, p in zip(shape[2:], stride, padding)]
    return (first[0][:, None] * kernel_size[1] + first[1][None, :]).astype(np.int32)


def _last_nan(x, winner, kernel_size, stride, padding):
    """``winner`` with each window holding a NaN sent to its last NaN, as PyTorch's kernel (``val > max || isnan(val)``)."""
    last = np.full(winner.shape, -1, dtype=np.int32)
    for (i, j), view in _pool_views(np.isnan(x), kernel_size, stride, padding, False):
        np.maximum(last, np.multiply(view, i * kernel_size[1] + j + 1, dtype=np.int32) - 1, out=last)
    return np.where(last >= 0, last, winner).astype(np.int32)


def _bits_dtype(dtype):
    return np.dtype(f"i{np.dtype(dtype).itemsize}")


def _kept(values, mask):
    """``values`` where ``mask``, else +0, bit-exact (inf and NaN pass, -0.0 stays) and branch-free: the values'
    bits and 0 or ~0. ``np.where`` on a mask as random as a window's winners mispredicts a branch per element and
    ran 7-10x slower."""
    bits = values.view(_bits_dtype(values.dtype))
    return np.bitwise_and(bits, -mask.astype(bits.dtype)).view(values.dtype)


@NUMPY.register("tensor.max_pool2d_grad")
def max_pool2d_grad(x, g, *, kernel_size, stride, padding):
    # the first largest element of each window (row-major) takes the window's cotangent, as PyTorch
    if _tiles(x, kernel_size, stride, padding):
        return _tiled_max_pool2d_grad(x, g, kernel_size)
    winner = _winners(x, kernel_size, stride, padding)
    per_offset = lambda i, j: _kept(g, winner == i * kernel_size[1] + j)  # noqa: E731
    return _scatter_windows(per_offset, g, _padded_shape(x.shape, padding), kernel_size, stride, padding)


def _tiled_max_pool2d_grad(x, g, kernel_size):
    """Each offset's kept cotangent bits as one plane, interleaved back at once."""
    masks = _pair_winner_masks(x) if tuple(kernel_size) == (2, 2) and is_host_array(x) else None
    if masks is None:
        winner = _winners(x, kernel_size, kernel_size, (0, 0)).reshape(-1)
        masks = (winner == k for k in range(kernel_size[0] * kernel_size[1]))
    planes = np.empty(tuple(kernel_size) + (g.size,), dtype=_bits_dtype(g.dtype))
    bits = g.reshape(-1).view(planes.dtype)
    for mask, plane in zip(masks, planes.reshape(-1, g.size)):
        np.bitwise_and(bits, np.negative(mask, dtype=planes.dtype), out=plane)  # _kept, into its plane
    return _from_offset_planes(planes, x.shape, kernel_size).view(g.dtype)


def _pair_winner_masks(x):
    """Per offset of a tiling 2x2 window, whether it is the window's winner, as ``_winners`` picks it, decided as a
    tournament: each row's pair (the right element wins only if larger), then the rows' winners (the lower only if
    larger), so ties go to the first row-major. Five passes where ``_winners`` makes a dozen (the gradient 25-45%
    faster at W5's shapes, its step 4.7% in an in-process A/B). None where a window holds a NaN (torch's pick there
    is the last NaN: ``_winners`` fixes it up)."""
    a, b, c, d = _offset_planes(x, (2, 2)).reshape(4, -1)
    right_above, right_below = np.greater(b, a), np.greater(d, c)
    above, below = np.maximum(a, b), np.maximum(c, d)
    if np.isnan(np.add.reduce(above) + np.add.reduce(below)):  # a NaN, or inf - inf: the general path decides
        return None
    lower = np.greater(below, above)
    upper = np.logical_not(lower)
    return upper & ~right_above, upper & right_above, lower & ~right_below, lower & right_below


@NUMPY.register("tensor.max_pool2d_select")
def max_pool2d_select(x, c, *, kernel_size, stride, padding):
    # each window's element of c where x's window has its winner
    winner = _winners(x, kernel_size, stride, padding)
    bits = np.zeros(winner.shape, dtype=_bits_dtype(c.dtype))
    for (i, j), view in _offset_views(_padded(c, padding), kernel_size, stride, (1, 1), winner.shape[2:]):
        np.bitwise_or(bits, _kept(view, winner == i * kernel_size[1] + j).view(bits.dtype), out=bits)  # one offset wins
    return bits.view(c.dtype)


@NUMPY.register("tensor.avg_pool2d")
def avg_pool2d(x, *, kernel_size, stride, padding):
    # the window's sum over the kernel offsets, divided by the kernel's size (padding counts, as PyTorch's default)
    views = _pool_views(x, kernel_size, stride, padding)
    out = np.array(next(views)[1])
    for _, view in views:
        out += view
    out /= x.dtype.type(kernel_size[0] * kernel_size[1])
    return out


@NUMPY.register("tensor.avg_pool2d_grad")
def avg_pool2d_grad(g, *, input_shape, kernel_size, stride, padding):
    share = g / g.dtype.type(kernel_size[0] * kernel_size[1])
    return _scatter_windows(lambda i, j: share, g, _padded_shape(input_shape, padding), kernel_size, stride, padding)
