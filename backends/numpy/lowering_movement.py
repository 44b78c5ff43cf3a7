"""NumPy kernels of the extra ``tensor`` primitives and the transformer composites, in the one ``NUMPY`` table."""

from __future__ import annotations

import math
import sys

import numpy as np

from kiln.backends.base import is_host_array
from kiln.backends.numpy.lowering import NUMPY, empty_reduction
from kiln.backends.numpy.out_nn import fresh, gelu_into, layer_norm_into
from kiln.compiler.errors import IndexValueError

NUMPY.register("tensor.abs")(np.abs)
NUMPY.register("tensor.sin")(np.sin)
NUMPY.register("tensor.cos")(np.cos)
NUMPY.register("tensor.floor")(np.floor)
NUMPY.register("tensor.ceil")(np.ceil)
NUMPY.register("tensor.round")(np.rint)  # half to even, as ONNX's Round (np.round's decimals=0 is rint too)
NUMPY.register("tensor.atan")(np.arctan)
NUMPY.register("tensor.asin")(np.arcsin)
NUMPY.register("tensor.acos")(np.arccos)


def _erf_kernel():
    """NumPy has no erf: SciPy's when installed (vectorized), else ``math.erf`` per element (correctly rounded, slow)."""
    try:
        from scipy.special import erf as scipy_erf
    except ImportError:
        scalar = np.frompyfunc(math.erf, 1, 1)
        return lambda x: np.asarray(scalar(x), dtype=np.asarray(x).dtype)
    return lambda x: scipy_erf(x).astype(np.asarray(x).dtype, copy=False)


NUMPY.register("tensor.erf")(erf := _erf_kernel())


@NUMPY.register("tensor.rsqrt")
def rsqrt(x):
    return 1 / np.sqrt(x)


@NUMPY.register("tensor.cumsum")
def cumsum(x, *, axis: int, reverse: bool):
    # dtype=: NumPy would widen int32 sums to int64
    if reverse:
        return np.flip(np.cumsum(np.flip(x, axis), axis=axis, dtype=x.dtype), axis)
    return np.cumsum(x, axis=axis, dtype=x.dtype)


@NUMPY.register("tensor.cumprod")
def cumprod(x, *, axis: int, reverse: bool):
    # one product after another along the axis, as PyTorch's CPU kernel and ONNX's Scan (backends/onnx) multiply
    if reverse:
        return np.flip(np.cumprod(np.flip(x, axis), axis=axis, dtype=x.dtype), axis)
    return np.cumprod(x, axis=axis, dtype=x.dtype)


@NUMPY.register("tensor.argsort")
def argsort(x, *, axis: int, descending: bool):
    """Stable both ways (ties in their original order), NaN the largest: last ascending, first descending."""
    if not descending:
        return stable_argsort(x, axis).astype(np.int64, copy=False)
    # ascending over the reversed axis, read backwards: the values descend, NaNs first, and ties (reversed twice) keep
    # their order; i in the reversed axis is n - 1 - i in x
    backwards = np.flip(stable_argsort(np.flip(x, axis), axis), axis).astype(np.int64)
    return (x.shape[axis] - 1) - backwards


def stable_argsort(x, axis: int):
    """NumPy's stable sort, NaNs last (the CuPy table swaps in CuPy's argsort, stable without a ``kind``)."""
    return np.argsort(x, axis=axis, kind="stable")


@NUMPY.register("tensor.clip")
def clip(x, *, min, max):
    return np.clip(x, min, max).astype(x.dtype, copy=False)


@NUMPY.register("tensor.reduce_min")
def reduce_min(x, *, axes, keepdims: bool):
    if np.size(x) == 0:  # an empty reduction gives the identity, +inf, as in ONNX
        return empty_reduction(x, axes, keepdims, highest(x.dtype))
    return np.min(x, axis=axes, keepdims=keepdims)


def highest(dtype: np.dtype):
    """The identity of min: inf, the largest integer, or True."""
    if dtype.kind == "f":
        return np.inf
    return np.iinfo(dtype).max if dtype.kind in "iu" else True


@NUMPY.register("tensor.argmax")
def argmax(x, *, axis: int, keepdims: bool):
    return np.argmax(x, axis=axis, keepdims=keepdims).astype(np.int64)


@NUMPY.register("tensor.take")
def take(x, indices, *, axis: int):
    return np.take(x, indices, axis=axis)


@NUMPY.register("tensor.check_index")
def check_index(index, *, size: int, message: str):
    """``index``, after checking its values are in ``[0, size)``; on a device the check is skipped (it would make the
    host wait for the values)."""
    if is_host_array(index) and index.size and (index.min() < 0 or index.max() >= size):
        position = int(np.flatnonzero((index < 0) | (index >= size))[0])
        raise IndexValueError(message.format(value=int(index.reshape(-1)[position]), position=position))
    return index


@NUMPY.register("tensor.scatter_add")
def scatter_add(updates, indices, *, axis: int, shape):
    axis, shape = axis % len(shape), tuple(shape)
    size = shape[axis]
    if is_host_array(indices) and indices.size and -size <= indices.min() and indices.max() < size:
        flat = indices.ravel() % size  # add.at's wrap of a negative index
        return _scatter_along(updates.reshape(shape[:axis] + (flat.size,) + shape[axis + 1 :]), flat, axis, shape)
    out = np.zeros(shape, dtype=updates.dtype)  # a device array, no indices, or one out of range (add.at raises IndexError)
    np.add.at(out, (slice(None),) * axis + (indices,), updates)
    return out


def _scatter_along(slices, indices, axis: int, shape: tuple[int, ...]):
    """Zeros of ``shape``, plus at each ``i`` along ``axis`` the sum of the ``slices`` (along ``axis``) indexed ``i``.

    A stable sort groups equal indices and ``add.reduceat`` sums each run in order: what ``np.add.at`` does, 2 to 6
    times faster on any axis (add.at walks the elements one by one). Each sum reads only its own slices, so an inf or
    NaN stays in its cell. When every index in ``[0, shape[axis])`` appears, the sums are the whole result. Host arrays
    with indices in ``[0, shape[axis])`` only (on a device, checking them would make the host wait).
    """
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    sums = np.add.reduceat(np.take(slices, order, axis=axis), starts, axis=axis, dtype=slices.dtype)
    if starts.size == shape[axis]:
        return sums
    out = np.zeros(shape, dtype=slices.dtype)
    out[(slice(None),) * axis + (ordered[starts],)] = sums
    return out


@NUMPY.register("tensor.concat")
def concat(*xs, axis: int):
    return np.concatenate(xs, axis=axis)


@NUMPY.register("tensor.slice")
def slice_(x, *, axis: int, start: int, stop: int, step: int):
    return x[(slice(None),) * (axis % x.ndim) + (slice(start, stop, step),)]


@NUMPY.register("tensor.pad")
def pad(x, *, low, high, interior, value: float):
    shape = tuple(lo + d + max(d - 1, 0) * mid + hi for d, lo, hi, mid in zip(x.shape, low, high, interior))
    out = np.full(shape, value, dtype=x.dtype)
    out[tuple(slice(lo, lo + (d - 1) * (mid + 1) + 1 if d else lo, mid + 1) for d, lo, mid in zip(x.shape, low, interior))] = x
    return out


@NUMPY.register("tensor.expand_dims")
def expand_dims(x, *, axes):
    return np.expand_dims(x, tuple(axes)) if axes else x


@NUMPY.register("tensor.squeeze")
def squeeze(x, *, axes):
    return np.squeeze(x, tuple(axes)) if axes else x


@NUMPY.register("tensor.triu")
def triu(x, *, k: int):
    return np.triu(x, k)


@NUMPY.register("tensor.tril")
def tril(x, *, k: int):
    return np.tril(x, k)


NUMPY.register("nn.gelu")(fresh(gelu_into))
NUMPY.register("nn.layer_norm")(fresh(layer_norm_into))


def gelu_erf(x):
    # x Phi(x) = x/2 (1 + erf(x / sqrt 2))
    return x.dtype.type(0.5) * x * (1 + erf(x * x.dtype.type(1 / math.sqrt(2))))


@NUMPY.register("tensor.random_uniform")
def random_uniform(seed, like, *, dtype, stream: int):
    # Philox-4x64 keyed by (seed, stream): counter-based, so a draw depends on nothing but its key
    key = np.array([int(seed) & 0xFFFFFFFFFFFFFFFF, stream], dtype=np.uint64)
    bits = np.random.Philox(key=key)
    if dtype.numpy == np.float32 and sys.byteorder == "little":
        return _float32_uniform(bits, np.shape(like))
    return np.random.Generator(bits).random(np.shape(like), dtype=dtype.numpy)


def _float32_uniform(bits: np.random.Philox, shape: tuple[int, ...]) -> np.ndarray:
    """``Generator(bits).random(shape, dtype=float32)`` bit for bit, vectorized (about twice as fast): NumPy splits each
    64-bit word into its low then its high 32 bits and keeps the top 24 of each, ``(u >> 8) * 2**-24``."""
    count = math.prod(shape)
    halves = bits.random_raw((count + 1) // 2).view(np.uint32)  # little-endian: the low half comes first
    np.right_shift(halves, 8, out=halves)
    uniform = halves.view(np.float32)  # in place: each exact 24-bit integer times 2**-24, cast to float32 exactly
    np.multiply(halves, 2.0**-24, out=uniform, casting="unsafe")
    return uniform[:count].reshape(shape)


@NUMPY.register("nn.batch_norm")
def batch_norm(x, weight, bias, *, eps: float):
    axes = (0,) + tuple(range(2, x.ndim))
    channel = (1, -1) + (1,) * (x.ndim - 2)
    centered = x - x.mean(axis=axes, keepdims=True)
    variance = (centered * centered).mean(axis=axes, keepdims=True)
    return centered / np.sqrt(variance + x.dtype.type(eps)) * weight.reshape(channel) + bias.reshape(channel)
