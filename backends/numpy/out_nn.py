"""Kernels of the nn composites that write their result into given storage (``out``), in place over it.

The lowering table's kernels call them with a fresh array; the planned code
generator calls them with a buffer of the memory plan (``OUT_KERNELS``), so a
large activation (a GELU, an attention softmax, a LayerNorm) is not a fresh
allocation, with its page faults, on every step. ``out`` must not alias ``x``.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from kiln.backends.numpy.half_cast import cast_into  # noqa: F401  (the emitted tensor.cast's, as _nn.cast_into)
from kiln.compiler.ops.transformer import GELU_TANH_CUBIC, GELU_TANH_LINEAR


def where_into(condition: np.ndarray, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``where(condition, x, y)`` into ``out``. The code generator writes ``where(c, x, 0)`` itself, as a bit mask
    (``selects_or_zero`` in ``codegen.py``); this is every other selection."""
    np.copyto(out, np.where(condition, x, y))
    return out


def softmax_into(x: np.ndarray, out: np.ndarray, axis: int) -> np.ndarray:
    # softmax = exp(x - max) / sum(exp(x - max))
    if out.size == 0:  # nothing to write (an empty axis has no max: NumPy's reduce would raise)
        return out
    np.subtract(x, np.maximum.reduce(x, axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    if axis not in (-1, out.ndim - 1):
        return np.divide(out, np.add.reduce(out, axis=axis, keepdims=True), out=out)
    return np.divide(out, row_sums_into(out, np.empty(out.shape[:-1] + (1,), out.dtype)), out=out)


def row_sums_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``x.sum(-1)`` into ``out`` (last axis kept or not); for C-contiguous float arrays as a product with a ones vector:
    BLAS reduces short rows (a 128-wide LayerNorm, a 64-wide attention row) ~3x faster than NumPy."""
    width = x.shape[-1]
    if not (x.flags.c_contiguous and out.flags.c_contiguous) or x.dtype.kind != "f" or width < 2:
        return np.add.reduce(x, axis=-1, keepdims=out.ndim == x.ndim, out=out)
    np.matmul(x.reshape(-1, width), _ones(width, x.dtype), out=out.reshape(-1, 1))
    return out


@functools.lru_cache(maxsize=None)
def _ones(width: int, dtype: np.dtype) -> np.ndarray:
    return np.ones((width, 1), dtype)


def sigmoid_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))``: a few ulps relative to the result everywhere, both tails included (``(tanh(x/2) + 1) / 2``
    is an ulp of 1 off, so ``sigmoid(-30)`` had no correct digit). Below about -88 (float32) / -709 (float64) ``exp``
    overflows to inf on purpose and the result is 0, as PyTorch's (a clamp there gave 6e-39, and ``silu(-1e30)`` -6e-9).
    ``out`` may be ``x``."""
    np.negative(x, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def gelu_into(x: np.ndarray, out: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return gelu_tanh_into(x, out)
    from kiln.backends.numpy.lowering_movement import gelu_erf  # the exact GELU allocates (NumPy has no erf)

    np.copyto(out, gelu_erf(x))
    return out


def gelu_tanh_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    # x / (1 + exp(-u)),  -u = x (-a - b x^2): nn.gelu's decomposition (compiler/ops/transformer.py). For x below about
    # -10 (float32) exp overflows to inf on purpose and the quotient is -0, as PyTorch's 0.5 x (1 + tanh(u / 2)).
    with np.errstate(over="ignore"):
        np.multiply(x, x, out=out)
        out *= x.dtype.type(-GELU_TANH_CUBIC)
        out += x.dtype.type(-GELU_TANH_LINEAR)
        out *= x
        np.exp(out, out=out)
    out += 1
    return np.divide(x, out, out=out)


def layer_norm_into(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, out: np.ndarray, eps: float) -> np.ndarray:
    # (x - mean) / sqrt(var + eps) * w + b over the trailing weight.ndim axes
    axes = tuple(range(x.ndim - weight.ndim, x.ndim))
    np.subtract(x, x.mean(axis=axes, keepdims=True), out=out)
    variance = np.square(out).mean(axis=axes, keepdims=True)
    variance += x.dtype.type(eps)
    out /= np.sqrt(variance, out=variance)
    out *= weight
    out += bias
    return out


def stacked_matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``a @ b`` for a stack of matrices ``a`` and one matrix ``b``: one GEMM over the stacked rows when ``a`` and ``out``
    are contiguous (NumPy calls BLAS once per matrix of the stack, ~20% slower for the 64-row matrices of a GPT step)."""
    if not (a.flags.c_contiguous and out.flags.c_contiguous):
        return np.matmul(a, b, out=out)
    np.matmul(a.reshape(-1, a.shape[-1]), b, out=out.reshape(-1, out.shape[-1]))
    return out


def batch_summed_matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    # sum_n a[n] @ b[n] = [a[0] ... a[N-1]] @ [b[0]; ...; b[N-1]]: one GEMM over the stacked rows (views when strides allow)
    return np.matmul(a.transpose(1, 0, 2).reshape(a.shape[1], -1), b.reshape(-1, b.shape[2]), out=out)


def fresh(into: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """The allocating kernel of an ``*_into`` one (same operands first, then the attributes by keyword)."""

    def kernel(x: np.ndarray, *operands: np.ndarray, **attrs) -> np.ndarray:
        return into(x, *operands, np.empty_like(x), **attrs)

    return kernel
